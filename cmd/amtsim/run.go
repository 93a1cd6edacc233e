package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/fleet"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
)

// defaultMEBxPassword is what `run` types into MEBx for devices whose store
// is empty, as an IT department's USB setup key would; it meets the strong
// password policy. --mebx-password replaces it.
const defaultMEBxPassword = "Amtsim-5!"

// runShard is run's default identity shard: the last, which fleet does
// not use by default, so that `amtsim run` and `amtsim fleet` side by side
// on one network never share a MAC, UUID or PID.
const runShard = identity.MaxShards - 1

// cmdRun boots devices and follows them through power-on, link, address,
// SCS discovery and the Hello. On the embedded LAN a Hello listener sits at
// the ProvisionServer address, so the whole timeline shows with no root.
func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", "run [--devices N] [flags]")
	devices := fs.Int("devices", 1, "how many devices to boot")
	seed := fs.Uint64("seed", 1, "identity seed")
	shard := fs.Int("shard", runShard, "identity shard (default: the last one, which amtsim fleet does not use by default, so the two never share a MAC, UUID or PID)")
	storePath := fs.String("store", "", "MEBx store file of the first device; created in setup mode if missing (default: in memory)")
	uplink := fs.String("uplink", "embedded", "embedded | tap:NAME | packet:IFACE (an existing interface through an AF_PACKET socket)")
	create := fs.Bool("create", false, "with --uplink tap:NAME: create the TAP for this run and remove it after (default: it must exist)")
	pcapPath := fs.String("pcap", "", "write the first device's frames to this pcap file (streamed: readable while the run goes on)")
	logFormat := fs.String("log-format", "text", "text | json")
	until := fs.String("until", "", "hello: stop when every device has sent its Hello (default on the embedded LAN); forever: run until interrupted or --timeout (default on a TAP)")
	timeout := fs.Duration("timeout", 0, "give up after this long (default 60s with --until hello, none with forever)")
	scale := fs.Float64("time-scale", 1, "run the firmware's schedules this many times faster than real time")
	password := fs.String("mebx-password", defaultMEBxPassword, "MEBx password set on devices whose store is empty")
	factory := fs.Bool("factory", false, "devices with an empty store boot factory-fresh (no PID/PPS: the PKI Hello of remote configuration)")
	dev := addDeviceFlags(fs)
	if _, err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	c := checks{fs: fs}
	checkDevices(&c, "--devices", *devices, 0)
	c.intIn("shard", *shard, 0, identity.MaxShards-1)
	c.durationIn("timeout", *timeout, 0, 100*365*24*time.Hour)
	c.floatIn("time-scale", *scale, minTimeScale, maxTimeScale)
	c.oneOf("log-format", *logFormat, "text", "json")
	if *until != "" {
		c.oneOf("until", *until, "hello", "forever")
	}
	if c.err != nil {
		return c.err
	}
	if err := mebx.CheckPassword(*password); err != nil && !*factory {
		return bad(fs, "--mebx-password: %v", err)
	}
	up, err := parseUplink(fs, *uplink, *create)
	if err != nil {
		return err
	}
	handler, err := logHandler("run", *logFormat, stdout)
	if err != nil {
		return err
	}
	clk := clock.Fleet(*scale)
	// Records carry the devices' clock time, so that under --time-scale the
	// LAN's lines and the devices' read as one timeline.
	log := slog.New(clockHandler{Handler: handler, now: clk.Now})

	switch {
	case *until != "":
	case up.embedded:
		*until = "hello"
	default:
		*until = "forever"
	}
	if *timeout == 0 && *until == "hello" {
		*timeout = time.Minute
	}
	runCtx := ctx
	if *timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}

	fo := fleet.Options{Devices: *devices, Seed: *seed, Shard: *shard, Password: *password, Factory: *factory,
		Clock: clk, Events: firmware.LogSink(handler)}
	if err := dev.apply(fs, &fo); err != nil {
		return err
	}
	if *storePath != "" {
		fo.Store = func(i int) mebx.Store {
			if i == 0 {
				return mebx.NewFileStore(*storePath)
			}
			return nil
		}
	}
	if *pcapPath != "" {
		fo.Capture = func(i int, _ identity.Identity) (*nic.Capture, error) {
			if i == 0 {
				return nic.CreateCapture(*pcapPath)
			}
			return nil, nil
		}
	}
	var (
		f  *fleet.Fleet
		hl *fleet.HelloLAN
	)
	if up.embedded {
		if hl, err = fleet.StartHelloLAN(fleet.HelloLANOptions{Log: log}); err != nil {
			return err
		}
		defer hl.Close()
		log.Info(string(event.LANUp), "subnet", hl.Net.Subnet().String(), "dhcp_dns", hl.Net.Gateway().String(),
			"domain", hl.Net.Domain(), "provision_server", hl.Addr().String())
		if f, err = hl.NewFleet(ctx, fo); err != nil {
			return setupFailed(ctx, err)
		}
	} else {
		wire, closer, err := up.openWire(handler, *devices)
		if err != nil {
			return err
		}
		defer closer.Close()
		stacks := nic.NewStacks(nic.StackOptions{})
		defer stacks.Close()
		fo.Uplink, fo.Stacks = wire, stacks
		if f, err = fleet.New(ctx, fo); err != nil {
			return setupFailed(ctx, err)
		}
	}
	defer f.Stop()
	err = f.Start(runCtx)
	if err == nil {
		if *until == "hello" {
			err = f.WaitHellos(runCtx)
			if err == nil && hl != nil {
				err = hl.WaitReceived(runCtx, f)
			}
		} else {
			<-runCtx.Done()
		}
	}
	f.Stop()
	sum := f.Summary()
	log.Info(string(event.RunDone), "devices", *devices, "hellos_sent", sum.HellosSent, "hellos_failed", sum.HellosFailed)
	switch {
	case ctx.Err() != nil:
		return interrupted(ctx, fmt.Sprintf("%d of %d devices sent a Hello (or said they send none)", f.Helloed(), *devices))
	case *until == "hello" && err != nil:
		return fmt.Errorf("%d of %d devices sent no Hello within %v: %s", *devices-f.Helloed(), *devices, *timeout, strings.Join(f.Silent(), ", "))
	}
	// With --until forever, the timeout is the normal end.
	return nil
}

// setupFailed is the error of a set-up that failed, or that a signal
// ended.
func setupFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return interrupted(ctx, "interrupted during setup")
	}
	return err
}

// clockHandler stamps records with a clock's time.
type clockHandler struct {
	slog.Handler
	now func() time.Time
}

func (h clockHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Time = h.now()
	return h.Handler.Handle(ctx, r)
}
