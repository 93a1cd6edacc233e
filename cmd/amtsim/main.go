// Command amtsim simulates Dell OptiPlex 960 desktops with the Intel 82566DM
// NIC and Intel AMT 5 firmware, one or many, on an embedded virtual LAN or a
// TAP interface.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/amtsim/amtsim/fleet"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/atomicfile"
	"github.com/amtsim/amtsim/internal/gcpolicy"
)

// Exit codes (README, "Exit status").
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed
	exitUsage   = 2 // the command line is wrong
	// exitNotProvisioned: the fleet ran, but not every device was
	// provisioned within the deadline.
	exitNotProvisioned = 3
	// exitInterrupted: SIGINT or SIGTERM ended run or fleet (the shell's
	// 128 + SIGINT); what happened so far was reported.
	exitInterrupted = 130
)

// exitError carries an exit code other than exitFailure.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// interrupted is the error of a command that a signal ended.
func interrupted(ctx context.Context, msg string) error {
	return exitError{exitInterrupted, msg + " (" + context.Cause(ctx).Error() + ")"}
}

// maxDevices is the most devices this machine's memory holds at
// perDevice bytes each (fleet.MaxDevices; 0: a run's peak under the
// default policy); one shard's identities if the memory is unknown.
func maxDevices(perDevice int64) int {
	avail, err := gcpolicy.Available()
	if err != nil {
		return identity.MaxIndex
	}
	return fleet.MaxDevices(avail, perDevice)
}

// checkDevices refuses a device count the machine cannot hold at
// perDevice bytes each (0: a run's peak), saying why.
func checkDevices(c *checks, flag string, n int, perDevice int64) {
	each := perDevice
	if each <= 0 {
		each = fleet.PeakBytesPerDevice
	}
	switch max := maxDevices(perDevice); {
	case n < 1:
		c.fail("%s %d: want at least 1 device", flag, n)
	case n > identity.MaxIndex:
		c.fail("%s %d: one shard holds at most %d devices (use --shard for more)", flag, n, identity.MaxIndex)
	case n > max:
		c.fail("%s %d: this machine's memory holds about %d devices (%d KiB each at the peak of a run)", flag, n, max, each>>10)
	}
}

// peakRSS is the process's largest resident set so far in bytes
// (getrusage; Linux counts in KiB), 0 if unknown.
func peakRSS() uint64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil || ru.Maxrss < 0 {
		return 0
	}
	return uint64(ru.Maxrss) << 10
}

// checkFiles says whether n more files can be open at once (a capture per
// device), with room for the process's own.
func checkFiles(n int) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return nil // unknown: let the opens say
	}
	if uint64(n)+256 > lim.Cur {
		return fmt.Errorf("%d devices need %d open files, and the limit is %d (ulimit -n)", n, n+256, lim.Cur)
	}
	return nil
}

const usage = `amtsim — Intel AMT 5 / OptiPlex 960 device simulator

Usage:
  amtsim fleet   [-n N] [flags]                a fleet provisioned end to end (embedded SCS)
  amtsim scs     --db FILE [flags]             the reference SCS on a real network or TAP
  amtsim run     [flags]                       boot devices and follow them to their Hello
  amtsim mebx    init|show|set|reset --store FILE [KEY=VALUE...]
  amtsim scenario list|validate|run [flags] FILE|NAME...   scenarios: suites, faults, verdicts, JUnit
  amtsim report  merge [--report OUT] FILE...  add up the reports of a sharded fleet
  amtsim version

Run 'amtsim COMMAND -h' for the flags of a command.
`

func main() {
	ctx, stop := signalContext()
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// signalContext ends on SIGINT or SIGTERM, with the signal as its cause:
// commands stop cleanly and report what happened so far.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig, ok := <-ch
		if !ok {
			return
		}
		cancel(fmt.Errorf("%v", sig))
		// A second signal does not wait for the clean stop.
		if _, ok := <-ch; ok {
			os.Exit(exitInterrupted)
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(ch)
		cancel(context.Canceled)
	}
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, args[1:], stdout, stderr)
	case "fleet":
		err = cmdFleet(ctx, args[1:], stdout, stderr)
	case "scs":
		err = cmdSCS(ctx, args[1:], stdout, stderr)
	case "mebx":
		err = cmdMEBx(args[1:], stdout)
	case "scenario":
		err = cmdScenario(ctx, args[1:], stdout, stderr)
	case "report":
		err = cmdReport(args[1:], stdout)
	case "version":
		fmt.Fprintln(stdout, version())
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "amtsim: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	if err == nil {
		return exitOK
	}
	var help helpRequested
	if errors.As(err, &help) {
		printUsage(help.fs, stdout)
		return exitOK
	}
	fmt.Fprintf(stderr, "amtsim %s: %v\n", args[0], err)
	var ue usageError
	if errors.As(err, &ue) {
		switch {
		case ue.fs != nil:
			fmt.Fprintln(stderr)
			printUsage(ue.fs, stderr)
		case ue.text != "":
			fmt.Fprint(stderr, "\n"+ue.text)
		}
		return exitUsage
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFailure
}

func version() string {
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " " + s.Value[:12]
			}
		}
	}
	return strings.TrimSpace("amtsim " + v + " — Dell OptiPlex 960, Intel 82566DM, Intel AMT 5.0")
}

// tuneGC sets the garbage collector for a long run under load, within
// budget bytes if not 0 (gcpolicy.ThroughputWithin; GOGC and GOMEMLIMIT
// override it). It returns the settings in force, for the log, and what
// puts the old ones back.
func tuneGC(stderr io.Writer, budget int64) (string, func()) {
	p, err := gcpolicy.ThroughputWithin(os.Getenv, budget)
	if err != nil {
		fmt.Fprintf(stderr, "amtsim: garbage collector left at Go's defaults: %v\n", err)
		return "go-default", func() {}
	}
	return p.String(), p.Restore
}

// startCPUProfile profiles the process until the returned stop, which
// writes the profile to path whole (temp file and rename).
func startCPUProfile(path string) (stop func() error, err error) {
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := atomicfile.Write(path, buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		return nil
	}, nil
}

// logHandler is the slog handler --log-format names: text or json.
func logHandler(cmd, format string, w io.Writer) (slog.Handler, error) {
	switch format {
	case "text":
		return slog.NewTextHandler(w, nil), nil
	case "json":
		return slog.NewJSONHandler(w, nil), nil
	}
	return nil, usageError{msg: fmt.Sprintf("--log-format %q (want text or json)", format)}
}
