package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func newCACmd(sf *serverFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "The mesh CA: trust bundle and root rotation"}
	bundle := &cobra.Command{
		Use:   "bundle",
		Short: "Print the trust bundle (PEM) proxies verify the mesh with",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := sf.client().GetRaw(cmd.Context(), "/apis/amime.io/v1/rootcert")
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	op := func(use, short, long string) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Long: long, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				b, err := sf.client().CAOperation(cmd.Context(), use)
				if err != nil {
					return err
				}
				return describeBundle(cmd.OutOrStdout(), b)
			},
		}
	}
	cmd.AddCommand(bundle,
		op("rotate-root", "Replace the self-signed root; the old one stays trusted until retire-old",
			`Create a new root. New certificates are signed by it at once; the trust bundle holds the old
and the new root, and is pushed to every proxy at once (SDS secret ROOTCA), so certificates
of both roots verify. Run "amime ca retire-old" once every proxy has renewed: after one
certificate lifetime (24h by default).`),
		op("retire-old", "Drop the previous roots from the trust bundle, ending a rotation", ""))
	return cmd
}

// describeBundle prints one line per root of a PEM bundle.
func describeBundle(w io.Writer, data []byte) error {
	n := 0
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return fmt.Errorf("trust bundle: %w", err)
		}
		n++
		fmt.Fprintf(w, "root %d: %s, serial %x, valid until %s\n", n, c.Subject, c.SerialNumber, c.NotAfter.Format("2006-01-02"))
	}
	if n == 0 {
		return fmt.Errorf("trust bundle: no certificate")
	}
	return nil
}
