package jwtauthn

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// jwt is a parsed (not yet verified) compact JWS, with the claims Envoy
// checks. Field by field it follows Envoy's Jwt::parseFromString, in the
// same order, so a malformed token gets the same status as from Envoy.
type jwt struct {
	raw        string
	payloadB64 string // the payload section as sent, for forward_payload_header
	header     []byte // decoded JSON
	payload    []byte // decoded JSON
	claims     map[string]json.RawMessage

	alg, kid string
	iss, sub string
	iat      uint64
	nbf, exp uint64
	aud      []string
	sig      []byte
}

// implementedAlgs are the algorithms Envoy implements; anything else,
// "none" included, is refused before any key is looked at.
func implementedAlg(alg string) bool {
	switch alg {
	case "ES256", "ES384", "ES512",
		"HS256", "HS384", "HS512",
		"RS256", "RS384", "RS512",
		"PS256", "PS384", "PS512",
		"EdDSA":
		return true
	}
	return false
}

// parseJWT splits, decodes and type-checks a token.
func parseJWT(token string) (*jwt, Status) {
	h, rest, ok1 := strings.Cut(token, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || h == "" || p == "" || s == "" || strings.IndexByte(s, '.') >= 0 {
		return nil, StatusBadFormat
	}
	t := &jwt{raw: token, payloadB64: p}

	var err error
	if t.header, err = decodeSegment(h); err != nil {
		return nil, StatusHeaderBadBase64
	}
	hdr, ok := jsonObject(t.header)
	if !ok {
		return nil, StatusHeaderBadJSON
	}
	alg, present, isString := jsonString(hdr["alg"])
	if !present || !isString {
		return nil, StatusHeaderBadAlg
	}
	if !implementedAlg(alg) {
		return nil, StatusHeaderNotImplementedAlg
	}
	t.alg = alg
	kid, present, isString := jsonString(hdr["kid"])
	if present && !isString {
		return nil, StatusHeaderBadKid
	}
	t.kid = kid

	if t.payload, err = decodeSegment(p); err != nil {
		return nil, StatusPayloadBadBase64
	}
	if t.claims, ok = jsonObject(t.payload); !ok {
		return nil, StatusPayloadBadJSON
	}
	var st Status
	if t.iss, st = stringClaim(t.claims, "iss", StatusIssNotString); st != StatusOK {
		return nil, st
	}
	if t.sub, st = stringClaim(t.claims, "sub", StatusSubNotString); st != StatusOK {
		return nil, st
	}
	if t.iat, st = uintClaim(t.claims, "iat", StatusIatNotInteger, StatusIatOutOfRange); st != StatusOK {
		return nil, st
	}
	if t.nbf, st = uintClaim(t.claims, "nbf", StatusNbfNotInteger, StatusNbfOutOfRange); st != StatusOK {
		return nil, st
	}
	if t.exp, st = uintClaim(t.claims, "exp", StatusExpNotInteger, StatusExpOutOfRange); st != StatusOK {
		return nil, st
	}
	if _, st = stringClaim(t.claims, "jti", StatusJtiNotString); st != StatusOK {
		return nil, st
	}
	if t.aud, ok = stringList(t.claims["aud"]); !ok {
		return nil, StatusAudNotString
	}
	if t.sig, err = decodeSegment(s); err != nil {
		return nil, StatusSignatureBadBase64
	}
	return t, StatusOK
}

// decodeSegment decodes base64url with or without padding, as Envoy's
// WebSafeBase64Unescape does.
func decodeSegment(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// jsonObject decodes a JSON object keeping raw member values. Keys are
// compared exactly (unlike decoding into a struct, where "EXP" would fill
// an Exp field), so what is checked is what later filters read.
func jsonObject(b []byte) (map[string]json.RawMessage, bool) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return nil, false
	}
	return m, true
}

// jsonString reports whether raw is present and a JSON string, and its
// value. JSON null is present and not a string.
func jsonString(raw json.RawMessage) (s string, present, isString bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false, false
	}
	if raw[0] != '"' {
		return "", true, false
	}
	// raw is a valid JSON value (it came out of a decoded object): without
	// escapes, the string is the bytes between the quotes.
	if len(raw) >= 2 && bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true, true
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", true, false
	}
	return s, true, true
}

func stringClaim(claims map[string]json.RawMessage, name string, wrong Status) (string, Status) {
	s, present, isString := jsonString(claims[name])
	if present && !isString {
		return "", wrong
	}
	return s, StatusOK
}

// uintClaim reads a NumericDate: a JSON number, truncated to a
// non-negative integer as Envoy's StructUtils::GetUInt64 does.
func uintClaim(claims map[string]json.RawMessage, name string, wrong, outOfRange Status) (uint64, Status) {
	raw := bytes.TrimSpace(claims[name])
	if len(raw) == 0 {
		return 0, StatusOK
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return 0, wrong
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return 0, wrong
	}
	if f < 0 || f >= math.MaxUint64 {
		return 0, outOfRange
	}
	return uint64(f), StatusOK
}

// stringList reads aud: a string or a list of strings.
func stringList(raw json.RawMessage) ([]string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, true
	}
	switch raw[0] {
	case '"':
		s, _, ok := jsonString(raw)
		if !ok {
			return nil, false
		}
		return []string{s}, true
	case '[':
		var l []json.RawMessage
		if err := json.Unmarshal(raw, &l); err != nil {
			return nil, false
		}
		out := make([]string, 0, len(l))
		for _, e := range l {
			s, _, ok := jsonString(e)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

// checkTime applies exp and nbf with the provider's clock skew, as
// Envoy's Jwt::verifyTimeConstraint.
func (t *jwt) checkTime(now, skew uint64) Status {
	if now+skew < t.nbf {
		return StatusNotYetValid
	}
	if t.exp != 0 && now > t.exp+skew {
		return StatusExpired
	}
	return StatusOK
}
