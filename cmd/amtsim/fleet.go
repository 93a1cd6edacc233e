package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/fleet"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/atomicfile"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
	"github.com/amtsim/amtsim/scs"
)

// cmdFleet boots a fleet and follows it to provisioned: on the embedded LAN
// with the reference SCS attached (default), or on a TAP next to a real
// DHCP/DNS server and SCS.
func cmdFleet(ctx context.Context, args []string, stdout, stderr io.Writer) (ferr error) {
	fs := newFlags("fleet", "fleet [-n N] [flags]")
	n := fs.Int("n", 25, "how many devices")
	fs.IntVar(n, "devices", 25, "how many devices (same as -n)")
	seed := fs.Uint64("seed", 1, "identity seed")
	shard := fs.Int("shard", 0, "identity shard (default: $JOB_COMPLETION_INDEX when set, as in a Kubernetes Indexed Job; else 0)")
	shards := fs.Int("shards", 0, "how many shards the whole fleet has, for reports that merge (0: not said)")
	rate := fs.Float64("rate", 0, "devices powered on per second (0: as fast as they boot, in batches)")
	helloTurns := fs.Int("hello-turns", fleet.DefaultHelloTurns, "how many devices' Hellos (lookup, connect, send) run at once; more that are due wait their turn,\nfirst come first served, so that a burst does not stretch every lookup past its timeout (0: no limit)")
	uplinkFlag := fs.String("uplink", "embedded", "embedded | tap:NAME | packet:IFACE (an existing interface through an AF_PACKET socket: a veth, a bridge port, a lab NIC)")
	create := fs.Bool("create", false, "with --uplink tap:NAME: create the TAP for this run and remove it after (default: it must exist)")
	deadline := fs.Duration("deadline", time.Minute, "every device must be provisioned within this, counted from the start (set-up included)")
	reportPath := fs.String("report", "", "write the summary as JSON to this file (also when interrupted); `amtsim report merge` adds shards' up")
	reportStdout := fs.Bool("report-stdout", false, "also print the report as one JSON line on stdout, last (for a pod's log)")
	deviceList := fs.String("device-list", "", "write one JSON line per device to this file: index, shard, host, mac, uuid, pid, state, and ms from power-on to each milestone\n"+
		"reached: boot_to_address_ms, boot_to_hello_ms (the first), boot_to_session_ms (the last session's start), boot_to_provisioned_ms")
	metricsAddr := fs.String("metrics", "", "serve Prometheus /metrics on this address (devices by state, Hellos, failures, boot → provisioned histogram and its phases; labelled with the shard)")
	quiet := fs.Duration("quiet", 2*time.Second, "with --uplink tap: or packet: (an SCS of your own): once every device is provisioned, keep them on until none\nhas had a call for this long, within --deadline, so that the SCS's checks after its commit are answered (0: power off at once)")
	linger := fs.Duration("metrics-linger", 0, "with --metrics: keep serving the final counts this long after the run (a signal ends it sooner), so that\nthe next scrape sees them; a scrape interval or two")
	cpuProfile := fs.String("cpu-profile", "", "write a CPU profile of the run to this file (go tool pprof; labels amtsim=device|scs split the sides)")
	pcapDir := fs.String("pcap-dir", "", "write each device's frames to DIR/<host name>.pcap (streamed: readable while the run goes on)")
	logFormat := fs.String("log-format", "text", "text | json (events with --events)")
	events := fs.Bool("events", false, "log every device and SCS event (default: progress only)")
	dir := fs.String("scs-dir", "", "keep the embedded SCS's database and CA here (default: a temporary directory)")
	scale := fs.Float64("time-scale", 1, "run the firmware's schedules this many times faster than real time")
	password := fs.String("mebx-password", defaultMEBxPassword, "the MEBx password the devices are readied with")
	provisioning := fs.String("provisioning", "psk", "psk: devices readied with PID/PPS for a PSK SCS | pki: factory-fresh devices with remote configuration, for a PKI SCS (MeshCentral)")
	dev := addDeviceFlags(fs)
	var perDevice byteSize
	fs.Var(&perDevice, "memory-per-device", "hold the run to this much memory per device (say 64KiB; the whole run to at least 256MiB)\nby the garbage collector's soft limit, which then runs more often: at 64KiB and 10,000 devices,\n14% more CPU per provisioning (default: up to three quarters of the machine's memory,\nabout 150 KB per device at the peak of a 100,000-device run on 24 GB)")
	steps := fs.Bool("steps", false, "print each device's milestones: power-on, address, SCS found, Hello, provisioned (default for up to 50 devices)")
	if _, err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if err := shardFromEnv(fs, shard); err != nil {
		return err
	}
	c := checks{fs: fs}
	if perDevice > 0 && perDevice < fleet.MinBytesPerDevice {
		c.fail("--memory-per-device %v: want at least %dKiB (a provisioning device's live heap alone peaks near 36 KB)", perDevice, fleet.MinBytesPerDevice>>10)
	}
	checkDevices(&c, "-n", *n, int64(perDevice))
	c.intIn("shard", *shard, 0, identity.MaxShards-1)
	c.intIn("shards", *shards, 0, identity.MaxShards)
	if *shards > 0 && *shard >= *shards {
		c.fail("--shard %d: the fleet has %d shards (0 to %d)", *shard, *shards, *shards-1)
	}
	c.floatIn("rate", *rate, 0, 1e6)
	c.intIn("hello-turns", *helloTurns, 0, 1<<20)
	c.durationIn("deadline", *deadline, time.Millisecond, 100*365*24*time.Hour)
	c.floatIn("time-scale", *scale, minTimeScale, maxTimeScale)
	c.oneOf("log-format", *logFormat, "text", "json")
	c.oneOf("provisioning", *provisioning, "psk", "pki")
	if c.err != nil {
		return c.err
	}
	if err := mebx.CheckPassword(*password); err != nil {
		return bad(fs, "--mebx-password: %v", err)
	}
	up, err := parseUplink(fs, *uplinkFlag, *create)
	if err != nil {
		return err
	}
	if *pcapDir != "" {
		if err := checkFiles(*n); err != nil {
			return bad(fs, "--pcap-dir: %v", err)
		}
		if err := os.MkdirAll(*pcapDir, 0o755); err != nil {
			return fmt.Errorf("fleet: --pcap-dir: %w", err)
		}
	}
	handler, err := logHandler("fleet", *logFormat, stdout)
	if err != nil {
		return err
	}
	var budget int64
	if perDevice > 0 {
		// The soft limit a sixteenth under the budget: resident memory
		// the limit does not hold (pages not yet given back, the binary)
		// rides on top of it.
		all := int64(*n) * int64(perDevice)
		budget = max(minBudget, all-all/16)
	}
	gc, restoreGC := tuneGC(stderr, budget)
	defer restoreGC()
	if *events {
		slog.New(handler).Info(string(event.FleetGC), "policy", gc)
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			return fmt.Errorf("fleet: %w", err)
		}
		defer func() {
			if perr := stop(); perr != nil && ferr == nil {
				ferr = fmt.Errorf("fleet: %w", perr)
			}
		}()
	}
	fo := fleet.Options{Devices: *n, Seed: *seed, Shard: *shard, Rate: *rate, Password: *password, Clock: clock.Fleet(*scale),
		Factory: *provisioning == "pki", HelloTurns: *helloTurns}
	if *helloTurns == 0 {
		fo.HelloTurns = -1 // no limit
	}
	if *metricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		addr, stop, err := serveMetrics(*metricsAddr, reg)
		if err != nil {
			return fmt.Errorf("fleet: --metrics: %w", err)
		}
		defer stop()
		slog.New(handler).Info(string(event.MetricsServing), "addr", addr, "shard", *shard)
		fo.Metrics = reg
		if *linger > 0 {
			// After the report: the last scrape sees what the report says.
			defer func() {
				slog.New(handler).Info(string(event.MetricsLingering), "addr", addr, "for", *linger)
				select {
				case <-time.After(*linger):
				case <-ctx.Done():
				}
			}()
		}
	} else if *linger > 0 {
		return bad(fs, "--metrics-linger goes with --metrics")
	}
	if err := dev.apply(fs, &fo); err != nil {
		return err
	}
	// Milestones come from device goroutines and progress from a ticker:
	// both write through one lock so that their lines never interleave.
	lines := &lockedWriter{w: stdout}
	stepsSet := false
	fs.Visit(func(f *flag.Flag) { stepsSet = stepsSet || f.Name == "steps" })
	switch {
	case *events:
		fo.Events = firmware.LogSink(handler)
	case *steps || !stepsSet && *n <= 50:
		fo.Events = milestones(lines)
	}
	if !*events {
		fo.Setup = setupProgress(stdout)
	}
	if *pcapDir != "" {
		fo.Capture = func(_ int, id identity.Identity) (*nic.Capture, error) {
			return nic.CreateCapture(filepath.Join(*pcapDir, id.HostName+".pcap"))
		}
	}

	// The deadline counts from here: set-up is part of the run.
	dctx, cancel := context.WithTimeout(ctx, *deadline)
	defer cancel()
	rep := fleet.Report{Seed: *seed, Shard: *shard, Shards: *shards, Phase: "setup"}
	var (
		e    *fleet.Embedded
		f    *fleet.Fleet
		wait func(context.Context) error
	)
	if up.embedded {
		eo := fleet.EmbeddedOptions{Fleet: fo, Dir: *dir, PKI: *provisioning == "pki"}
		if *events {
			eo.SCS = func(o *scs.ServerOptions) { o.Events = scs.LogSink(handler) }
		}
		if e, err = fleet.StartEmbedded(dctx, eo); err == nil {
			defer e.Close()
			f, wait = e.Fleet, e.Wait
		}
	} else {
		wire, closer, err := up.openWire(handler, *n)
		if err != nil {
			return err
		}
		defer closer.Close()
		stacks := nic.NewStacks(nic.StackOptions{})
		defer stacks.Close()
		fo.Uplink, fo.Stacks = wire, stacks
		if f, err = fleet.New(dctx, fo); err == nil {
			defer f.Stop()
			wait = func(ctx context.Context) error {
				if err := f.Wait(ctx); err != nil {
					return err
				}
				return f.WaitQuiet(ctx, *quiet)
			}
		}
	}
	if f != nil {
		rep.Phase = "boot"
		stopProgress := showProgress(lines, f, *events)
		err = f.Start(dctx)
		if err == nil {
			rep.Phase = "provisioning"
			err = wait(dctx)
		}
		stopProgress()
		rep.Summary = f.Summary()
		if *deviceList != "" {
			if derr := writeDeviceList(*deviceList, f.DeviceReports()); derr != nil {
				return fmt.Errorf("fleet: --device-list: %w", derr)
			}
		}
		if e != nil {
			s := e.SCSSummary()
			rep.SCS = &s
		}
		// The run is over: the embedded SCS and the devices are stopped
		// before the summary, so that no event is written after or into it.
		// The SCS goes first: its workers would otherwise compete with the
		// devices' power-off for the CPU.
		if e != nil {
			e.StopSCS()
		}
		f.Stop()
	} else {
		if ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			return err // the set-up failed: nothing ran to report on
		}
		rep.Summary = fleet.Summary{Devices: *n}
	}
	rep.OK = err == nil
	rep.Interrupted = ctx.Err() != nil
	rep.PeakRSS = peakRSS()
	printSummary(stdout, rep, *deadline)
	if *reportPath != "" {
		if jerr := writeReport(*reportPath, rep); jerr != nil {
			return fmt.Errorf("fleet: report: %w", jerr)
		}
	}
	if *reportStdout {
		b, jerr := json.Marshal(rep)
		if jerr != nil {
			return fmt.Errorf("fleet: report: %w", jerr)
		}
		fmt.Fprintf(stdout, "%s\n", b)
	}
	switch {
	case err == nil:
		return nil
	case rep.Interrupted:
		return interrupted(ctx, fmt.Sprintf("interrupted during %s: %d of %d devices provisioned", rep.Phase, rep.Provisioned, rep.Devices))
	case errors.Is(err, context.DeadlineExceeded):
		return exitError{exitNotProvisioned, fmt.Sprintf("%d of %d devices provisioned within %v (stopped during %s)", rep.Provisioned, rep.Devices, *deadline, rep.Phase)}
	}
	return err
}

// setupProgress prints the set-up's progress at most once a second.
func setupProgress(w io.Writer) func(stage string, done, total int) {
	var (
		mu   sync.Mutex
		last time.Time
	)
	return func(stage string, done, total int) {
		mu.Lock()
		defer mu.Unlock()
		if done < total && time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		if total >= 10000 || done < total {
			fmt.Fprintf(w, "setting up: %s %d/%d\n", stage, done, total)
		}
	}
}

// milestones prints one line per device for each step a newcomer wants to
// see; the rest of the events stay quiet.
func milestones(w io.Writer) firmware.Sink {
	var mu sync.Mutex
	helloed := map[string]bool{}
	return func(e firmware.Event) {
		attr := func(k string) string {
			for _, a := range e.Attrs {
				if a.Key == k {
					return a.Value.String()
				}
			}
			return ""
		}
		var msg string
		switch e.Name {
		case event.PowerOn:
			msg = "power on   " + attr("mac") + "  uuid " + attr("uuid")
		case event.DHCPBound:
			msg = "leased     " + attr("ip") + "  domain " + attr("domain")
		case event.AddressStatic:
			msg = "static     " + attr("ip")
		case event.SCSResolved, event.SCSConfigured:
			msg = "SCS        " + attr("name") + " " + attr("addr")
		case event.HelloSent:
			mu.Lock()
			first := !helloed[e.Device]
			helloed[e.Device] = true
			mu.Unlock()
			if first {
				msg = "Hello      → " + attr("scs") + "  pid " + attr("pid")
			}
		case event.SessionLogin:
			msg = "session    " + attr("peer") + " logged in as " + attr("user")
		case event.Provisioned:
			msg = "provisioned"
		}
		if msg == "" {
			return
		}
		mu.Lock()
		fmt.Fprintf(w, "%-18s %s\n", e.Device, msg)
		mu.Unlock()
	}
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// showProgress prints the fleet's state: one line redrawn on a terminal,
// a plain line each second otherwise (and not at all when events are
// logged, which say more).
func showProgress(w io.Writer, f *fleet.Fleet, quiet bool) func() {
	if quiet {
		return func() {}
	}
	term := isTerminal(w)
	every := time.Second
	if term {
		every = 200 * time.Millisecond
	}
	stop, done := make(chan struct{}), make(chan struct{})
	line := func() string {
		p := f.Progress()
		var parts []string
		for _, s := range fleet.States {
			if v := p.States[s]; v > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", s, v))
			}
		}
		return fmt.Sprintf("%6.1fs  %s  (%.1f provisioned/s)", p.Elapsed.Seconds(), strings.Join(parts, ", "), p.PerSecond)
	}
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				if term {
					fmt.Fprintf(w, "\r\033[K%s\n", line())
				}
				return
			case <-t.C:
				if term {
					fmt.Fprintf(w, "\r\033[K%s", line())
				} else {
					fmt.Fprintln(w, line())
				}
			}
		}
	}()
	return func() { close(stop); <-done }
}

func isTerminal(w io.Writer) bool {
	if l, ok := w.(*lockedWriter); ok {
		w = l.w
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// shardFromEnv takes --shard from $JOB_COMPLETION_INDEX (a Kubernetes
// Indexed Job's pod index) when the flag is not given.
func shardFromEnv(fs *flag.FlagSet, shard *int) error {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "shard" })
	v, ok := os.LookupEnv("JOB_COMPLETION_INDEX")
	if set || !ok {
		return nil
	}
	i, err := strconv.Atoi(v)
	if err != nil {
		return bad(fs, "$JOB_COMPLETION_INDEX %q: want the shard, a number (or pass --shard)", v)
	}
	*shard = i
	return nil
}

// writeReport writes r as indented JSON, whole or not at all.
func writeReport(path string, r fleet.Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(b, '\n'), 0o644)
}

// writeDeviceList writes one JSON line per device, whole or not at all.
func writeDeviceList(path string, ds []fleet.DeviceReport) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, d := range ds {
		if err := enc.Encode(d); err != nil {
			return err
		}
	}
	return atomicfile.Write(path, buf.Bytes(), 0o644)
}

// p50p99 is a phase's median and 99th percentile, for the summary.
func p50p99(l fleet.Latency) string {
	if l.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f / %.0f ms", l.P50, l.P99)
}

func printSummary(w io.Writer, r fleet.Report, deadline time.Duration) {
	fmt.Fprintf(w, "\n%d of %d devices provisioned in %.2fs (%.1f/s)\n", r.Provisioned, r.Devices, r.ElapsedMS/1000, r.PerSecond)
	l := r.BootToProvisioned
	fmt.Fprintf(w, "boot → provisioned: p50 %.0f ms, p95 %.0f ms, p99 %.0f ms, max %.0f ms\n", l.P50, l.P95, l.P99, l.Max)
	if p := r.Phases; p != nil {
		fmt.Fprintf(w, "  in phases, p50 / p99: address %s, → first Hello %s, → session %s, session %s\n",
			p50p99(p.BootToAddress), p50p99(p.AddressToHello), p50p99(p.HelloToSession), p50p99(p.SessionToProvisioned))
	}
	fmt.Fprintf(w, "devices: %d Hellos sent, %d failed; %d DHCP, %d DNS, %d TLS, %d auth (%d Negotiate), %d request failures\n",
		r.HellosSent, r.HellosFailed, r.DHCPFailures, r.DNSFailures, r.TLSFailures, r.AuthFailures, r.NegotiateFailures, r.BadRequests)
	if r.PeakRSS > 0 && r.Devices > 0 {
		fmt.Fprintf(w, "memory: peak RSS %.1f MB, %.1f KB per device\n", float64(r.PeakRSS)/1e6, float64(r.PeakRSS)/1e3/float64(r.Devices))
	}
	if r.Uplink != nil {
		fmt.Fprintln(w, uplinkLine(*r.Uplink))
	}
	if len(r.MergedShards) > 0 {
		fmt.Fprintf(w, "shards: %s merged", joinInts(r.MergedShards))
		if len(r.Missing) > 0 {
			fmt.Fprintf(w, "; MISSING %s", joinInts(r.Missing))
		}
		if len(r.Failed) > 0 {
			fmt.Fprintf(w, "; FAILED %s", joinInts(r.Failed))
		}
		fmt.Fprintln(w)
	}
	if r.SCS != nil {
		s := r.SCS
		fmt.Fprintf(w, "SCS: %d Hellos (%d duplicate, %d unknown, %d dropped), %d sessions, %d provisioned, %d failed",
			s.Hellos, s.Duplicates, s.Unknown, s.Dropped, s.Sessions, s.Provisioned, s.Failed)
		if s.Aborted > 0 {
			fmt.Fprintf(w, ", %d cut short by the stop", s.Aborted)
		}
		fmt.Fprintln(w)
		steps := make([]string, 0, len(s.Failures))
		for step := range s.Failures {
			steps = append(steps, step)
		}
		sort.Strings(steps)
		for _, step := range steps {
			for reason, n := range s.Failures[step] {
				fmt.Fprintf(w, "  failed at %s: %d × %s\n", step, n, reason)
			}
		}
	}
	switch {
	case r.Interrupted:
		fmt.Fprintf(w, "INTERRUPTED during %s\n", r.Phase)
	case !r.OK && len(r.MergedShards) > 0:
		fmt.Fprintln(w, "NOT OK: a shard failed or is missing")
	case !r.OK:
		fmt.Fprintf(w, "NOT all provisioned within %v (stopped during %s)", deadline, r.Phase)
		if len(r.Unprovisioned) > 0 {
			fmt.Fprintf(w, "; not provisioned: %s", strings.Join(r.Unprovisioned, ", "))
		}
		fmt.Fprintln(w)
	}
}

// uplinkLine says what crossed a TAP or packet uplink and what was lost
// there.
func uplinkLine(u nic.UplinkCounts) string {
	name := u.Uplink
	if name == "" {
		name = "uplinks"
	}
	s := fmt.Sprintf("%s: %d frames in (%d for no device), %d out; lost: %d read, %d write errors",
		name, u.RxFrames, u.RxOther, u.TxFrames, u.ReadErrors, u.WriteErrors)
	if strings.HasPrefix(u.Uplink, "packet:") || u.Unfinished+u.KernelDrops > 0 {
		s += fmt.Sprintf(", %d dropped by the kernel, %d unfinished", u.KernelDrops, u.Unfinished)
	}
	if u.DuplicateMACs > 0 {
		s += fmt.Sprintf("; %d frames from another host with a device's MAC", u.DuplicateMACs)
	}
	return s
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}
