package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/fleet"
)

// usageError marks a wrong command line: exit 2, one line, then the
// command's usage (fs's, or text).
type usageError struct {
	msg  string
	fs   *flag.FlagSet
	text string
}

func (e usageError) Error() string { return e.msg }

// helpRequested is -h or --help: the usage goes to stdout and the exit is 0.
type helpRequested struct{ fs *flag.FlagSet }

func (helpRequested) Error() string { return "help requested" }

// newFlags is a command's flag set. It prints nothing itself: dispatch
// reports a parse error once, with the usage after it.
func newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: amtsim %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// printUsage writes fs's usage to w.
func printUsage(fs *flag.FlagSet, w io.Writer) {
	fs.SetOutput(w)
	fs.Usage()
	fs.SetOutput(io.Discard)
}

// parseFlags parses flags that may stand before, between or after
// positional arguments (amtsim mebx set password=… --store FILE). A command
// that takes no positional arguments passes maxPos 0; more than maxPos is a
// usage error, as is any parse error.
func parseFlags(fs *flag.FlagSet, args []string, maxPos int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, helpRequested{fs}
			}
			return nil, usageError{msg: err.Error(), fs: fs}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if maxPos >= 0 && len(pos) > maxPos {
		return nil, usageError{msg: fmt.Sprintf("unexpected argument %q", pos[maxPos]), fs: fs}
	}
	return pos, nil
}

// bad is a usage error about one flag's value.
func bad(fs *flag.FlagSet, format string, args ...any) error {
	return usageError{msg: fmt.Sprintf(format, args...), fs: fs}
}

// checks collects the range checks of a command's numeric flags and
// reports the first that fails, as a usage error.
type checks struct {
	fs  *flag.FlagSet
	err error
}

func (c *checks) fail(format string, args ...any) {
	if c.err == nil {
		c.err = bad(c.fs, format, args...)
	}
}

// intIn checks lo ≤ v ≤ hi.
func (c *checks) intIn(name string, v, lo, hi int) {
	if v < lo || v > hi {
		c.fail("--%s %d: want %d to %d", name, v, lo, hi)
	}
}

// floatIn checks that v is a finite number with lo ≤ v ≤ hi (NaN and ±Inf
// are refused: every comparison with NaN is false).
func (c *checks) floatIn(name string, v, lo, hi float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < lo || v > hi {
		c.fail("--%s %v: want a number from %g to %g", name, v, lo, hi)
	}
}

// durationIn checks lo ≤ v ≤ hi.
func (c *checks) durationIn(name string, v, lo, hi time.Duration) {
	if v < lo || v > hi {
		c.fail("--%s %v: want %v to %v", name, v, lo, hi)
	}
}

// oneOf checks that v is one of the allowed words.
func (c *checks) oneOf(name, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	c.fail("--%s %q: want %s", name, v, strings.Join(allowed, " or "))
}

// Time scales outside this range are refused: below it a Hello round
// takes years; above it the schedule's 12 s steps fall under the network
// floor, and the run no longer follows the schedule.
const (
	minTimeScale = 0.01
	maxTimeScale = 100000
)

// deviceFlags are the flags run and fleet share to shape the devices:
// their firmware generation and MEBx entries typed into readied stores.
type deviceFlags struct {
	firmware string
	mebx     []string
}

func addDeviceFlags(fs *flag.FlagSet) *deviceFlags {
	d := &deviceFlags{}
	fs.StringVar(&d.firmware, "firmware", "amt5", "firmware profile: "+strings.Join(firmware.ProfileNames(), " | ")+" (amt5: the OptiPlex 960's AMT 5.0)")
	fs.Func("mebx", "KEY=VALUE typed into every readied MEBx store (repeatable; keys of amtsim mebx set), e.g. --mebx 'pki.hash=Lab Root=sha256:HEX'", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("%q is not KEY=VALUE", v)
		}
		d.mebx = append(d.mebx, v)
		return nil
	})
	return d
}

// apply checks the flags and sets them on fleet options.
func (d *deviceFlags) apply(fs *flag.FlagSet, fo *fleet.Options) error {
	p, err := firmware.ProfileByName(d.firmware)
	if err != nil {
		return bad(fs, "--firmware: %v", err)
	}
	s := p.Factory()
	if err := s.Set(d.mebx...); err != nil {
		return bad(fs, "--mebx: %v", err)
	}
	fo.Profile, fo.MEBx = p, d.mebx
	return nil
}

// isSet reports whether the command line gave flag name.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// minBudget is the least a --memory-per-device run is held to: the
// process's own (the LAN, the SCS, the runtime) before any device.
const minBudget = 256 << 20

// byteSize is a flag of a byte count: a number with an optional binary
// unit (KiB, MiB, GiB; also K, M, G), say 64KiB.
type byteSize int64

func (b byteSize) String() string {
	switch v := int64(b); {
	case v == 0:
		return "0"
	case v%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", v>>30)
	case v%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", v>>20)
	case v%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", v>>10)
	default:
		return strconv.FormatInt(v, 10)
	}
}

func (b *byteSize) Set(s string) error {
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return fmt.Errorf("%q: want a byte count, say 64KiB", s)
	}
	shift, ok := unitShift(s[i:])
	if !ok {
		return fmt.Errorf("%q: unit %q, want KiB, MiB or GiB", s, s[i:])
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil || n > math.MaxInt64>>shift {
		return fmt.Errorf("%q: too large", s)
	}
	*b = byteSize(n << shift)
	return nil
}

func unitShift(unit string) (uint, bool) {
	switch strings.ToLower(unit) {
	case "", "b":
		return 0, true
	case "k", "kib":
		return 10, true
	case "m", "mib":
		return 20, true
	case "g", "gib":
		return 30, true
	}
	return 0, false
}
