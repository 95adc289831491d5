package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"time"

	"github.com/spf13/cobra"
)

func newDashboardCmd() *cobra.Command {
	var (
		addr    string
		browser bool
	)
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Open the console: service graph, per-service charts, traces, proxies' sync state",
		Long: `Open amime's console, served by the control plane (--console-addr, 127.0.0.1:20001
by default; amime up starts it). It checks the console answers, prints its URL and opens it
in the desktop's browser when there is one.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			url := "http://" + addr + "/"
			c := &http.Client{Timeout: 3 * time.Second}
			resp, err := c.Get(url)
			if err != nil {
				return fmt.Errorf("the console does not answer at %s (%v): is the control plane or amime up running? (--console-addr)", url, err)
			}
			resp.Body.Close()
			fmt.Fprintln(cmd.OutOrStdout(), url)
			if browser {
				openBrowser(url)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "console-addr", "127.0.0.1:20001", "where the control plane serves the console")
	cmd.Flags().BoolVar(&browser, "browser", true, "open the URL in the desktop's browser when there is one")
	return cmd
}

// openBrowser opens url with the desktop's opener; on a machine without a
// desktop (no DISPLAY) the printed URL is all there is.
func openBrowser(url string) {
	var name string
	switch {
	case runtime.GOOS == "darwin":
		name = "open"
	case os.Getenv("DISPLAY") != "" || os.Getenv("WAYLAND_DISPLAY") != "":
		name = "xdg-open"
	default:
		return
	}
	if p, err := exec.LookPath(name); err == nil {
		_ = exec.Command(p, url).Start()
	}
}
