// Package register keeps a workload registered with the control plane
// outside Kubernetes: it creates the workload's WorkloadEntry, renews it
// with heartbeats, and removes it on a clean stop. A workload that dies
// without stopping is marked unhealthy and then removed by the control
// plane when its heartbeats stop.
package register

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/apiclient"
	"github.com/amime-mesh/amime/internal/config"
)

// Annotation marks entries a proxy created, so the control plane knows it
// may remove them when their heartbeats stop.
const Annotation = "amime.io/registered-by"

// minInterval bounds how often a control plane can make a proxy beat.
const minInterval = 50 * time.Millisecond

// Options describe the workload.
type Options struct {
	Client         *apiclient.Client
	Namespace      string
	Name           string
	Address        string
	Labels         map[string]string
	Ports          map[string]uint32 // port name -> port the workload's proxy listens on
	ServiceAccount string
	// Interval between heartbeats (default 5 s; the control plane's grace
	// is 15 s before unhealthy). A shorter interval the control plane asks
	// for in its heartbeat answers wins, so a lease shorter than Interval
	// (--unhealthy-after) does not expire between heartbeats.
	Interval time.Duration
	Log      *slog.Logger
}

func (o *Options) entry() *config.Object {
	return &config.Object{
		APIVersion: "networking.istio.io/v1",
		Kind:       config.WorkloadEntry,
		Meta: config.Meta{Name: o.Name, Namespace: o.Namespace, Labels: o.Labels,
			Annotations: map[string]string{Annotation: "proxy"}},
		Spec: &networking.WorkloadEntry{Address: o.Address, Labels: o.Labels, Ports: o.Ports, ServiceAccount: o.ServiceAccount},
	}
}

// Run registers the workload and keeps it registered until ctx ends, then
// unregisters it. Failures to reach the control plane are retried; Run
// returns only when ctx ends (nil) or the entry is refused as invalid.
func Run(ctx context.Context, o Options) error {
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	doc, err := config.Encode(o.entry(), "yaml")
	if err != nil {
		return fmt.Errorf("encode workload entry: %w", err)
	}
	registered := false
	interval := o.Interval
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if !registered {
			if _, err := o.Client.Apply(ctx, doc, o.Namespace, false); err != nil {
				var se *apiclient.StatusError
				if errors.As(err, &se) && se.Code == http.StatusUnprocessableEntity {
					return fmt.Errorf("register %s/%s: %w", o.Namespace, o.Name, err)
				}
				o.Log.Warn("registration failed; retrying", "workload", o.Namespace+"/"+o.Name, "err", err)
			} else {
				registered = true
				o.Log.Info("registered", "workload", o.Namespace+"/"+o.Name, "address", o.Address)
			}
		}
		if registered {
			asked, err := o.Client.Heartbeat(ctx, o.Namespace, o.Name)
			if err == nil && asked > 0 {
				if want := min(o.Interval, max(asked, minInterval)); want != interval {
					interval = want
					t.Reset(interval)
					o.Log.Debug("heartbeat interval set by the control plane", "interval", interval)
				}
			} else if err != nil {
				var se *apiclient.StatusError
				if errors.As(err, &se) && se.Code == http.StatusNotFound {
					// The control plane lost or expired the entry: register again.
					registered = false
					continue
				}
				if ctx.Err() == nil {
					o.Log.Warn("heartbeat failed", "workload", o.Namespace+"/"+o.Name, "err", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			if registered {
				dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				k, _ := config.LookupKind(config.WorkloadEntry)
				if err := o.Client.Delete(dctx, k, o.Namespace, o.Name); err != nil {
					o.Log.Warn("unregister failed; the control plane removes it when heartbeats stop", "err", err)
				} else {
					o.Log.Info("unregistered", "workload", o.Namespace+"/"+o.Name)
				}
			}
			return nil
		case <-t.C:
		}
	}
}
