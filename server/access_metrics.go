package server

import (
	"chatd/server/pubhook"

	"github.com/prometheus/client_golang/prometheus"
)

// accessCollector serves the metrics of raw auth and of the publish hooks
// (the raw rooms', label hook="raw", and each Pusher app's, hook="app:ID"),
// read when /metrics is scraped.
type accessCollector struct {
	s                                      *Server
	rejected, readOnly, expired            *prometheus.Desc
	decisions, failures, waiting, posts, d *prometheus.Desc
	cancelled                              *prometheus.Desc
}

func newAccessCollector(s *Server) *accessCollector {
	return &accessCollector{
		s: s,
		rejected: prometheus.NewDesc("chatd_raw_auth_rejected_total",
			"Raw handshakes refused for their token (-raw-auth-secret): missing, malformed, signature, expired, claims (401), room (403), user_conns (429, -max-conns-per-user).", []string{"reason"}, nil),
		readOnly: prometheus.NewDesc("chatd_raw_auth_readonly_dropped_total",
			"Messages of raw members whose token says publish: false, dropped.", nil, nil),
		expired: prometheus.NewDesc("chatd_raw_auth_expired_total",
			"Raw connections closed with 1008 \"token expired\" at their token's exp.", nil, nil),
		decisions: prometheus.NewDesc("chatd_publish_hook_decisions_total",
			"Messages the publish hook's backend decided, by action (allow, replace, reject).", []string{"hook", "action"}, nil),
		failures: prometheus.NewDesc("chatd_publish_hook_failures_total",
			"Messages decided by the failure policy, by failure (timeout, error, bad_answer, queue_full) and policy (open: let through, closed: rejected).", []string{"hook", "failure", "policy"}, nil),
		waiting: prometheus.NewDesc("chatd_publish_hook_waiting",
			"Messages waiting for a publish hook POST (bounded by its queue).", []string{"hook"}, nil),
		posts: prometheus.NewDesc("chatd_publish_hook_posts_total",
			"POSTs made to the publish hook's backend.", []string{"hook"}, nil),
		d: prometheus.NewDesc("chatd_publish_hook_post_seconds_total",
			"Time spent in publish hook POSTs, answers included.", []string{"hook"}, nil),
		cancelled: prometheus.NewDesc("chatd_publish_hook_sender_gone_total",
			"Messages dropped undecided (or with their decision unused) because their sender disconnected while they waited on the publish hook.", []string{"hook"}, nil),
	}
}

func (c *accessCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.rejected, c.readOnly, c.expired, c.decisions, c.failures, c.waiting, c.posts, c.d, c.cancelled} {
		ch <- d
	}
}

func (c *accessCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	if a := s.access; a != nil {
		if a.key != nil {
			for i := range a.rejected {
				ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(a.rejected[i].Load()), authReasonNames[i])
			}
			ch <- prometheus.MustNewConstMetric(c.readOnly, prometheus.CounterValue, float64(a.readOnly.Load()))
			ch <- prometheus.MustNewConstMetric(c.expired, prometheus.CounterValue, float64(a.expired.Load()))
		}
		if a.hook != nil {
			c.hook(ch, "raw", a.hook.h)
		}
	}
	for id, h := range s.pusher.PublishHooks() {
		c.hook(ch, "app:"+id, h)
	}
}

func (c *accessCollector) hook(ch chan<- prometheus.Metric, name string, h *pubhook.Hook) {
	st := h.Stats()
	for _, x := range []struct {
		action string
		n      uint64
	}{{"allow", st.Allowed}, {"replace", st.Replaced}, {"reject", st.Rejected}} {
		ch <- prometheus.MustNewConstMetric(c.decisions, prometheus.CounterValue, float64(x.n), name, x.action)
	}
	policy := "open"
	if h.Config().FailClosed {
		policy = "closed"
	}
	for f := pubhook.Timeout; f <= pubhook.QueueFull; f++ {
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(st.Failed[f]), name, f.String(), policy)
	}
	ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(st.Waiting), name)
	ch <- prometheus.MustNewConstMetric(c.posts, prometheus.CounterValue, float64(st.Posts), name)
	ch <- prometheus.MustNewConstMetric(c.d, prometheus.CounterValue, float64(st.PostNanos)/1e9, name)
	ch <- prometheus.MustNewConstMetric(c.cancelled, prometheus.CounterValue, float64(st.Cancelled), name)
}
