// Package bench is chatbench, the load generator for chatd, and the
// library behind cmd/chatbench: scenarios (density, broadcast, churn,
// slowloris, slowconsumer, soak, recovery) over the raw /chat/{room} WebSocket protocol,
// run against a server under test and, side by side, against the servers
// users would otherwise run (bench/baseline is the reference one). The
// broadcast scenario also runs over Pusher Channels (-protocol pusher,
// pusher.go): members subscribe at /app/{key}?protocol=7, senders publish
// through the signed HTTP API; -protocol raw,pusher runs both on one
// server and prints pusher/raw. The recovery scenario (recovery.go) runs
// Pusher members in this process that are cut on a schedule and resume
// with chatd_since, and counts what each missed, got twice or out of order.
//
// Usage:
//
//	cfg, err := bench.ParseArgs(os.Args[1:], os.Stderr)
//	report, err := bench.Run(ctx, cfg) // prints the table, writes -json and -plot
//
// How a run is put together:
//
//   - Run (run.go) starts each target (target.go: a command on a free
//     loopback port, or a -url server), runs the scenario (scenarios.go)
//     and stops it, alternating A and B for -repeat; then it reports
//     (report.go, plot.go). Scenarios open, inspect and close groups of
//     connections over the fleet (run_groups.go) and measure broadcast
//     phases (run_phase.go), sampling the server's RSS meanwhile
//     (sampler.go). A target may be several server processes
//     (-instances N copies of the command, or a -url list; density only):
//     connection id modulo N picks the instance, and server figures are
//     sums over the instances' /proc readings.
//   - The client side is a fleet (fleet.go) of Agents (agent.go): one in
//     this process, or one per worker process (chatbench re-executed with
//     CHATBENCH_WORKER=1, speaking JSON lines over stdin/stdout).
//     Scenarios only send Requests to the fleet (agent_request.go); an
//     Agent holds named groups of connections (agent_member.go) and opens
//     (agent_open.go), broadcasts (agent_phase.go, agent_send.go,
//     agent_sync.go), inspects, probes (agent_slow.go) and closes
//     (agent_close.go) them.
//   - Each connection is a lean client (wsclient.go): one TCP socket, one
//     goroutine reading through a small bufio.Reader, masked frames
//     written with one syscall. In Pusher mode a member subscribes before
//     it counts as open, and each sender is a keep-alive HTTP/1.1 client
//     of the HTTP API (pusher.go: publisher).
//   - Broadcast payloads (payload.go) carry phase, sender, sequence, send
//     time and a CRC-32C, so every receiver checks every message; latency
//     goes into log-linear histograms (stats.go) that workers ship back.
//   - The server process is sampled from /proc (procstat.go): CPU from
//     utime+stime, RSS from VmRSS, open descriptors, threads.
//   - The soak (soak.go) opens its long-lived rooms and prepares their
//     broadcast phases from the coordinator as the other scenarios do;
//     then one "soak" command per worker (agent_soak.go) runs every loop
//     at once until the duration is over: the phases' senders, churn
//     cycles (agent_churn.go), and each round's slow consumers and hostile
//     clients (stall-handshake, stall-frame, half-close, garbage,
//     http-stall: agent_hostile.go).
//     Meanwhile the coordinator samples the server (/proc and /metrics:
//     soak_sample.go); afterwards it drains the phases and judges start
//     against end (soakChecks in soak_verdict.go).
//
// Goroutines: per connection one reader (none for slow consumers, whose
// point is not to read); per sender one goroutine during a phase; one
// progress poller per live bar; one RSS sampler per measured phase. An
// Agent runs one command at a time; its counters are atomics read by the
// progress display at any time. The soak command is one command, and runs
// its loops in goroutines of its own (one per loop and sender, one per
// churn cycle in flight, one trickler per batch of trickling attackers). A payload handed to onMessage is valid
// until it returns (it points into the connection's read buffer).
package bench
