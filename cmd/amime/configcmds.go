package main

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/amime-mesh/amime/internal/apiclient"
	"github.com/amime-mesh/amime/internal/config"
)

// serverFlags are the flags every command that talks to the control plane
// shares.
type serverFlags struct {
	server string
	token  string
}

func (f *serverFlags) register(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&f.server, "server", envOr("AMIME_SERVER", apiclient.DefaultServer), "control-plane API address ($AMIME_SERVER)")
	cmd.PersistentFlags().StringVar(&f.token, "token", os.Getenv("AMIME_TOKEN"), "bearer token for a control plane off loopback ($AMIME_TOKEN)")
}

func (f *serverFlags) client() *apiclient.Client { return apiclient.New(f.server, f.token) }

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// readManifests reads -f arguments: files, directories (their *.yaml,
// *.yml and *.json files, recursively, in name order) or "-" for stdin,
// joined as one multi-document YAML.
func readManifests(paths []string, stdin io.Reader) ([]byte, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("-f is required")
	}
	var out bytes.Buffer
	add := func(data []byte) {
		out.WriteString("\n---\n")
		out.Write(data)
	}
	for _, p := range paths {
		if p == "-" {
			data, err := io.ReadAll(stdin)
			if err != nil {
				return nil, fmt.Errorf("read stdin: %w", err)
			}
			add(data)
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			add(data)
			continue
		}
		var files []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch filepath.Ext(path) {
			case ".yaml", ".yml", ".json":
				if !d.IsDir() {
					files = append(files, path)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			add(data)
		}
	}
	return out.Bytes(), nil
}

func resourceName(kind, name string) string {
	k, _ := config.LookupKind(kind)
	return strings.ToLower(k.Kind) + "." + k.Group + "/" + name
}

func newApplyCmd(sf *serverFlags) *cobra.Command {
	var (
		files     []string
		namespace string
		dryRun    bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Create or update Istio resources from YAML (all or nothing)",
		Example: `  amime apply -f examples/routing/virtual-service-v2.yaml
  cat dr.yaml | amime apply -f -`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			docs, err := readManifests(files, cmd.InOrStdin())
			if err != nil {
				return err
			}
			res, err := sf.client().Apply(cmd.Context(), docs, namespace, dryRun)
			if err != nil {
				return err
			}
			suffix := ""
			if dryRun {
				suffix = " (dry run)"
			}
			for _, r := range res {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s%s\n", resourceName(r.Kind, r.Name), r.Op, suffix)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "file, directory or - (stdin)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace for resources that do not name one (default \"default\")")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate and report without storing")
	return cmd
}

func newGetCmd(sf *serverFlags) *cobra.Command {
	var (
		namespace     string
		allNamespaces bool
		output        string
	)
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "Show Istio resources",
		Example: `  amime get virtualservices
  amime get vs reviews -o yaml
  amime get destinationrules -A`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, ok := config.LookupKind(args[0])
			if !ok {
				return fmt.Errorf("unknown kind %q (known: %s)", args[0], knownKinds())
			}
			if namespace == "" && !allNamespaces {
				namespace = "default"
			}
			if allNamespaces {
				namespace = ""
			}
			c := sf.client()
			var objs []*config.Object
			if len(args) == 2 {
				if namespace == "" {
					return fmt.Errorf("a NAME needs a namespace: use -n, not -A")
				}
				o, err := c.Get(cmd.Context(), k, namespace, args[1])
				if err != nil {
					return err
				}
				objs = []*config.Object{o}
			} else {
				var err error
				if objs, err = c.List(cmd.Context(), k, namespace); err != nil {
					return err
				}
			}
			return printObjects(cmd.OutOrStdout(), objs, output, allNamespaces, len(args) == 2)
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace (default \"default\")")
	cmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "every namespace")
	cmd.Flags().StringVarP(&output, "output", "o", "", "yaml, json or wide")
	return cmd
}

func knownKinds() string {
	var names []string
	for _, k := range config.Kinds() {
		names = append(names, k.Plural)
	}
	return strings.Join(names, ", ")
}

func printObjects(w io.Writer, objs []*config.Object, output string, withNS, single bool) error {
	switch output {
	case "yaml", "json":
		for i, o := range objs {
			data, err := config.Encode(o, output)
			if err != nil {
				return err
			}
			if output == "yaml" && i > 0 {
				fmt.Fprintln(w, "---")
			}
			_, _ = w.Write(data)
			if output == "json" {
				fmt.Fprintln(w)
			}
		}
		return nil
	case "", "wide":
	default:
		return fmt.Errorf("-o: want yaml, json or wide, got %q", output)
	}
	if len(objs) == 0 && !single {
		fmt.Fprintln(w, "No resources found.")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	header := []string{"NAME"}
	if withNS {
		header = append([]string{"NAMESPACE"}, header...)
	}
	if output == "wide" {
		header = append(header, "HOSTS")
	}
	header = append(header, "AGE")
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, o := range objs {
		row := []string{o.Meta.Name}
		if withNS {
			row = append([]string{o.Meta.Namespace}, row...)
		}
		if output == "wide" {
			row = append(row, strings.Join(hostsOf(o), ","))
		}
		row = append(row, age(o.Meta.CreationTimestamp))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// age prints a duration the way kubectl does.
func age(t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	d := time.Since(t)
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func newDeleteCmd(sf *serverFlags) *cobra.Command {
	var (
		files     []string
		namespace string
	)
	cmd := &cobra.Command{
		Use:   "delete (-f FILE|DIR|- | KIND NAME)",
		Short: "Delete Istio resources",
		Args:  cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := sf.client()
			type target struct{ kind, ns, name string }
			var targets []target
			switch {
			case len(files) > 0 && len(args) == 0:
				docs, err := readManifests(files, cmd.InOrStdin())
				if err != nil {
					return err
				}
				def := namespace
				if def == "" {
					def = "default"
				}
				objs, err := config.DecodeOptions{DefaultNamespace: def}.Decode(docs)
				if err != nil {
					return err
				}
				for _, o := range objs {
					targets = append(targets, target{o.Kind, o.Meta.Namespace, o.Meta.Name})
				}
			case len(files) == 0 && len(args) == 2:
				if namespace == "" {
					namespace = "default"
				}
				targets = append(targets, target{args[0], namespace, args[1]})
			default:
				return fmt.Errorf("give either -f or KIND NAME")
			}
			var failed []string
			for _, t := range targets {
				k, ok := config.LookupKind(t.kind)
				if !ok {
					return fmt.Errorf("unknown kind %q", t.kind)
				}
				if err := c.Delete(cmd.Context(), k, t.ns, t.name); err != nil {
					failed = append(failed, err.Error())
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s deleted\n", resourceName(k.Kind, t.name))
			}
			if len(failed) > 0 {
				return fmt.Errorf("%s", strings.Join(failed, "; "))
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "file, directory or - (stdin)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace (default \"default\")")
	return cmd
}

// hostsOf returns the hosts an object is about, for -o wide.
func hostsOf(o *config.Object) []string {
	switch s := o.Spec.(type) {
	case interface{ GetHosts() []string }:
		return s.GetHosts()
	case interface{ GetHost() string }:
		return []string{s.GetHost()}
	}
	return nil
}
