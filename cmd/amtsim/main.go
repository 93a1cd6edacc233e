// Command amtsim simulates Dell OptiPlex 960 desktops with the Intel 82566DM
// NIC and Intel AMT 5 firmware, one or many, on an embedded virtual LAN or a
// TAP interface.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/amtsim/amtsim/internal/atomicfile"
	"github.com/amtsim/amtsim/internal/gcpolicy"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed
	exitUsage   = 2 // the command line is wrong
)

const usage = `amtsim — Intel AMT 5 / OptiPlex 960 device simulator

Usage:
  amtsim fleet   [-n N] [flags]                a fleet provisioned end to end (embedded SCS)
  amtsim scs     --db FILE [flags]             the reference SCS on a real network or TAP
  amtsim run     [flags]                       boot devices and follow them to their Hello
  amtsim mebx    init|show|set|reset --store FILE [KEY=VALUE...]
  amtsim version

Run 'amtsim COMMAND -h' for the flags of a command.
`

func main() {
	ctx, stop := signalContext()
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// signalContext ends on SIGINT or SIGTERM: commands stop cleanly.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
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
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintf(stderr, "amtsim %s: %v\n", args[0], err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFailure
}

// usageError marks errors in the command line itself.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// parseInterleaved parses flags that may stand before, between or after
// positional arguments (amtsim mebx set password=… --store FILE).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
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

// tuneGC sets the garbage collector for a long run under load
// (gcpolicy.Throughput; GOGC and GOMEMLIMIT override it). It returns the
// settings in force, for the log, and what puts the old ones back.
func tuneGC(stderr io.Writer) (string, func()) {
	p, err := gcpolicy.Throughput(os.Getenv)
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
	return nil, usageError{fmt.Sprintf("%s: --log-format %q (want text or json)", cmd, format)}
}
