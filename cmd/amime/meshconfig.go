package main

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"
	meshconfig "istio.io/api/mesh/v1alpha1"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/xds/translate"
)

// loadMeshConfig reads Istio's MeshConfig from path (the "mesh" key of
// the istio ConfigMap, or the whole ConfigMap) into mesh. Flags the user
// set explicitly win over the file; the file wins over flag defaults.
func loadMeshConfig(path string, flags *pflag.FlagSet, mesh *translate.Mesh) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--mesh-config: %w", err)
	}
	mc, err := config.DecodeMeshConfig(data)
	if err != nil {
		return fmt.Errorf("--mesh-config %s: %w", path, err)
	}
	mesh.Config = mc
	if mc.GetTrustDomain() != "" && !flags.Changed("trust-domain") {
		mesh.TrustDomain = mc.GetTrustDomain()
	}
	if mc.GetRootNamespace() != "" {
		mesh.RootNamespace = mc.GetRootNamespace()
	}
	if mc.GetOutboundTrafficPolicy().GetMode() == meshconfig.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY && !flags.Changed("registry-only") {
		mesh.OutboundTrafficPolicy = translate.RegistryOnly
	}
	if d := mc.GetConnectTimeout(); d != nil {
		mesh.ConnectTimeout = d.AsDuration()
	}
	if p := mc.GetDefaultHttpRetryPolicy(); p != nil {
		mesh.DefaultHTTPRetry = p
	}
	return nil
}
