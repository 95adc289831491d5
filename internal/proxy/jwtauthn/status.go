package jwtauthn

// Status is the outcome of verifying a request's JWTs. The strings are
// Envoy's (source/common/jwt/status.cc): they are the body of the 401/403
// local reply, and operators grep logs and client errors for them.
type Status uint8

// The statuses jwt_authn can answer with.
const (
	StatusOK Status = iota
	StatusMissing
	StatusNotYetValid
	StatusExpired
	StatusBadFormat
	StatusHeaderBadBase64
	StatusHeaderBadJSON
	StatusHeaderBadAlg
	StatusHeaderNotImplementedAlg
	StatusHeaderBadKid
	StatusPayloadBadBase64
	StatusEd25519SignatureWrongLength
	StatusPayloadBadJSON
	StatusIssNotString
	StatusSubNotString
	StatusIatNotInteger
	StatusIatOutOfRange
	StatusNbfNotInteger
	StatusNbfOutOfRange
	StatusExpNotInteger
	StatusExpOutOfRange
	StatusJtiNotString
	StatusAudNotString
	StatusSignatureBadBase64
	StatusUnknownIssuer
	StatusAudienceNotAllowed
	StatusVerificationFail
	StatusJwksNoValidKeys
	StatusJwksKidAlgMismatch
	StatusJwksFetchFail
)

var statusText = [...]string{
	StatusOK:                          "OK",
	StatusMissing:                     "Jwt is missing",
	StatusNotYetValid:                 "Jwt not yet valid",
	StatusExpired:                     "Jwt is expired",
	StatusBadFormat:                   "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
	StatusHeaderBadBase64:             "Jwt header is an invalid Base64url encoded",
	StatusHeaderBadJSON:               "Jwt header is an invalid JSON",
	StatusHeaderBadAlg:                "Jwt header [alg] field is required and must be a string",
	StatusHeaderNotImplementedAlg:     "Jwt header [alg] is not supported",
	StatusHeaderBadKid:                "Jwt header [kid] field is not a string",
	StatusPayloadBadBase64:            "Jwt payload is an invalid Base64url encoded",
	StatusEd25519SignatureWrongLength: "Jwt ED25519 signature is wrong length",
	StatusPayloadBadJSON:              "Jwt payload is an invalid JSON",
	StatusIssNotString:                "Jwt payload [iss] field is not a string",
	StatusSubNotString:                "Jwt payload [sub] field is not a string",
	StatusIatNotInteger:               "Jwt payload [iat] field is not an integer",
	StatusIatOutOfRange:               "Jwt payload [iat] field is not a positive 64 bit integer",
	StatusNbfNotInteger:               "Jwt payload [nbf] field is not an integer",
	StatusNbfOutOfRange:               "Jwt payload [nbf] field is not a positive 64 bit integer",
	StatusExpNotInteger:               "Jwt payload [exp] field is not an integer",
	StatusExpOutOfRange:               "Jwt payload [exp] field is not a positive 64 bit integer",
	StatusJtiNotString:                "Jwt payload [jti] field is not a string",
	StatusAudNotString:                "Jwt payload [aud] field is not a string or string list",
	StatusSignatureBadBase64:          "Jwt signature is an invalid Base64url encoded",
	StatusUnknownIssuer:               "Jwt issuer is not configured",
	StatusAudienceNotAllowed:          "Audiences in Jwt are not allowed",
	StatusVerificationFail:            "Jwt verification fails",
	StatusJwksNoValidKeys:             "Jwks doesn't have any valid public key",
	StatusJwksKidAlgMismatch:          "Jwks doesn't have key to match kid or alg from Jwt",
	StatusJwksFetchFail:               "Jwks remote fetch is failed",
}

// String returns Envoy's text for the status.
func (s Status) String() string {
	if int(s) < len(statusText) {
		return statusText[s]
	}
	return "unknown jwt_authn status"
}
