package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/quicmux"
)

// observeFlags are --metrics and --pprof.
type observeFlags struct {
	metrics, pprof string
}

func (o *observeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics at http://ADDR/metrics and the recent failures at http://ADDR/failures (e.g. 127.0.0.1:9090)")
	fs.StringVar(&o.pprof, "pprof", "", "serve Go profiles at http://ADDR/debug/pprof/ (e.g. 127.0.0.1:6060)")
}

// observer owns the metrics and pprof HTTP servers.
type observer struct {
	metrics *quicmux.Metrics
	reg     *prometheus.Registry // nil without --metrics
	servers []*http.Server
	wg      sync.WaitGroup
}

// start binds the requested listeners (so a bad address fails the start) and serves them.
func (o *observeFlags) start(side string, log *logrus.Entry) (*observer, error) {
	obs := &observer{}
	if o.metrics != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		m, err := quicmux.NewMetrics(reg, side)
		if err != nil {
			return nil, err
		}
		obs.metrics, obs.reg = m, reg
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/failures", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(m.RecentFailures())
		})
		if err := obs.serve(o.metrics, mux, "metrics", log); err != nil {
			return nil, err
		}
	}
	if o.pprof != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		if err := obs.serve(o.pprof, mux, "pprof", log); err != nil {
			obs.close()
			return nil, err
		}
	}
	return obs, nil
}

// register adds collectors to the metrics (nothing without --metrics).
func (obs *observer) register(cs ...prometheus.Collector) {
	if obs.reg != nil {
		obs.reg.MustRegister(cs...)
	}
}

func (obs *observer) serve(addr string, h http.Handler, what string, log *logrus.Entry) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--%s: %w", what, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	obs.servers = append(obs.servers, srv)
	obs.wg.Add(1)
	go func() {
		defer obs.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Warn(what + " server failed")
		}
	}()
	log.WithField("addr", "http://"+ln.Addr().String()).Info(what + " serving")
	return nil
}

func (obs *observer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range obs.servers {
		_ = s.Shutdown(ctx)
	}
	obs.wg.Wait()
}
