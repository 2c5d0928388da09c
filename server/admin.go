package server

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The admin listener (Config.AdminAddr): a plain net/http server on its own
// address, for operators and their tools, never for clients. It is not
// part of the poller: a few scrapes and probes a second do not need it.
//
//	/metrics        Prometheus text exposition (metrics.go)
//	/debug/pprof/   net/http/pprof
//	/healthz        200 while the process serves
//	/readyz         200 while new clients are welcome, 503 while draining
//	                after SIGTERM or while the cluster broker is disconnected

// Ready reports whether the server wants new clients: it is not shutting
// down, and its cluster broker (if any) is connected.
func (s *Server) Ready() bool {
	return !s.draining.Load() && s.broker.Stats().Connected
}

func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, healthzBody)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		switch {
		case s.draining.Load():
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "draining\n")
		case !s.broker.Stats().Connected:
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "cluster broker disconnected\n")
		case s.historyReason() != "":
			// Serving, without history: say why.
			io.WriteString(w, "ready; history unavailable: "+s.historyReason()+"\n")
		default:
			io.WriteString(w, "ready\n")
		}
	})
	return mux
}

// startAdmin opens the admin listener, if one is configured. A default
// address (Config.AdminAddrDefault) that cannot be listened on is logged
// and skipped.
func (s *Server) startAdmin() error {
	if s.cfg.AdminAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.AdminAddr)
	if err != nil && s.cfg.AdminAddrDefault {
		s.log.Warn("no admin listener (/metrics, /healthz, /readyz, /debug/pprof/): the default -admin-addr "+
			s.cfg.AdminAddr+" is not available (another program, or another chatd on this host, has it); "+
			"serving without one. Give this chatd its own -admin-addr to have it, or -admin-addr off to say so",
			"admin_addr", s.cfg.AdminAddr, "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	s.adminLn = ln
	s.adminSrv = &http.Server{
		Handler:           s.adminHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		// pprof's profile and trace run for ?seconds= (30 by default).
		WriteTimeout: 5 * time.Minute,
		IdleTimeout:  time.Minute,
		ErrorLog:     slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go s.adminSrv.Serve(ln)
	return nil
}

// AdminAddr returns the admin listener's address (after Start), or nil
// when there is none.
func (s *Server) AdminAddr() net.Addr {
	if s.adminLn == nil {
		return nil
	}
	return s.adminLn.Addr()
}
