package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/hello"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/lan"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
)

// defaultMEBxPassword is what `run` types into MEBx for devices whose store
// is empty, as an IT department's USB setup key would; it meets the strong
// password policy. --mebx-password replaces it.
const defaultMEBxPassword = "Amtsim-5!"

// scsHelloMAC is the MAC of the embedded LAN's Hello listener host.
var scsHelloMAC = net.HardwareAddr{0x02, 0xa0, 0x00, 0x00, 0x00, 0x02}

// cmdRun boots devices and follows them through power-on, link, address,
// SCS discovery and the Hello. On the embedded LAN a Hello listener sits at
// the ProvisionServer address, so the whole timeline shows with no root.
func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	devices := fs.Int("devices", 1, "how many devices to boot")
	seed := fs.Uint64("seed", 1, "identity seed")
	shard := fs.Int("shard", 0, "identity shard")
	storePath := fs.String("store", "", "MEBx store file of the first device; created in setup mode if missing (default: in memory)")
	uplink := fs.String("uplink", "embedded", "embedded | tap:NAME")
	pcapPath := fs.String("pcap", "", "write the first device's frames to this pcap file")
	logFormat := fs.String("log-format", "text", "text | json")
	until := fs.String("until", "", "hello: stop when every device has sent its Hello (default on the embedded LAN); forever: run until interrupted or --timeout (default on a TAP)")
	timeout := fs.Duration("timeout", 0, "give up after this long (default 60s with --until hello, none with forever)")
	scale := fs.Float64("time-scale", 1, "run the firmware's schedules this many times faster than real time")
	password := fs.String("mebx-password", defaultMEBxPassword, "MEBx password set on devices whose store is empty")
	factory := fs.Bool("factory", false, "devices with an empty store boot factory-fresh (no PID/PPS, no Hello)")
	if _, err := parseInterleaved(fs, args); err != nil {
		return err
	}
	if *scale <= 0 {
		return usageError{"run: --time-scale must be positive"}
	}
	handler, err := logHandler("run", *logFormat, stdout)
	if err != nil {
		return err
	}
	clk := clock.Scaled(*scale)
	// Records carry the devices' clock time, so that under --time-scale the
	// LAN's lines and the devices' read as one timeline.
	log := slog.New(clockHandler{Handler: handler, now: clk.Now})
	if *devices < 1 {
		return usageError{"run: --devices must be at least 1"}
	}
	if err := mebx.CheckPassword(*password); err != nil && !*factory {
		return usageError{fmt.Sprintf("run: --mebx-password: %v", err)}
	}

	// A device is done when its Hello went out (on the embedded LAN: when
	// the listener read it), or when it said it sends none (factory mode,
	// provisioned, …).
	var (
		up       nic.Uplink
		embedded = *uplink == "embedded"
		mu       sync.Mutex
		pending  = map[string]bool{}
		byUUID   = map[identity.UUID]string{}
		allDone  = make(chan struct{})
	)
	done := func(device string) {
		mu.Lock()
		defer mu.Unlock()
		if pending[device] {
			delete(pending, device)
			if len(pending) == 0 {
				close(allDone)
			}
		}
	}
	switch {
	case embedded:
		netw, err := lan.StartNetwork(lan.NetworkOptions{})
		if err != nil {
			return err
		}
		defer netw.Close()
		h, err := netw.AddHost(scsHelloMAC, netip.PrefixFrom(netw.SCS(), netw.Subnet().Bits()), nil)
		if err != nil {
			return err
		}
		rx := hello.NewReceiver(hello.ReceiverOptions{
			Handle: func(r hello.Received) {
				log.Info("hello.received", "from", r.From.String(), "version", r.Version.String(), "retry", r.Retry,
					"uuid", r.UUID.String(), "pid", r.PID, "admin_set", r.AdminSet)
				mu.Lock()
				device := byUUID[r.UUID]
				mu.Unlock()
				done(device)
			},
			OnError: func(from netip.AddrPort, err error) { log.Warn("hello.bad", "from", from.String(), "err", err.Error()) },
		})
		if _, err := h.Listen(mebx.DefaultSCSPort, rx.ServeConn); err != nil {
			return err
		}
		log.Info("lan.up", "subnet", netw.Subnet().String(), "dhcp_dns", netw.Gateway().String(),
			"domain", netw.Domain(), "provision_server", fmt.Sprintf("%s:%d", netw.SCS(), mebx.DefaultSCSPort))
		up = netw.Segment
	case strings.HasPrefix(*uplink, "tap:"):
		tap, err := nic.OpenTAP(nic.TAPOptions{Name: strings.TrimPrefix(*uplink, "tap:")})
		if err != nil {
			return err
		}
		defer tap.Close()
		up = tap
	default:
		return usageError{fmt.Sprintf("run: --uplink %q (want embedded or tap:NAME)", *uplink)}
	}
	switch *until {
	case "":
		*until = "forever"
		if embedded {
			*until = "hello"
		}
	case "hello", "forever":
	default:
		return usageError{fmt.Sprintf("run: --until %q (want hello or forever)", *until)}
	}
	if *timeout == 0 && *until == "hello" {
		*timeout = time.Minute
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}

	stacks := nic.NewStacks(nic.StackOptions{})
	defer stacks.Close()
	logEvents := firmware.LogSink(handler)

	sink := func(e firmware.Event) {
		logEvents(e)
		if e.Name == "hello.off" || e.Name == "hello.sent" && !embedded {
			done(e.Device)
		}
	}

	var devs []*firmware.Device
	defer func() {
		for _, d := range devs {
			d.PowerOff()
		}
	}()
	for i := range *devices {
		id, err := identity.Of(*seed, *shard, i)
		if err != nil {
			return err
		}
		var store mebx.Store = mebx.NewMemStore()
		if i == 0 && *storePath != "" {
			store = mebx.NewFileStore(*storePath)
		}
		if err := prepareStore(store, id, *password, *factory); err != nil {
			return err
		}
		var capture *nic.Capture
		if i == 0 && *pcapPath != "" {
			if capture, err = nic.CreateCapture(*pcapPath); err != nil {
				return err
			}
			defer capture.Close()
		}
		d, err := firmware.New(firmware.Options{
			Identity: id, Store: store, Uplink: up, Stacks: stacks, Capture: capture,
			Clock: clk, Events: sink,
		})
		if err != nil {
			return err
		}
		mu.Lock()
		pending[d.ID()] = true
		byUUID[id.UUID] = d.ID()
		mu.Unlock()
		devs = append(devs, d)
	}
	// Every device is pending before the first powers on: a quick first
	// Hello must not find the set empty and end the run.
	for _, d := range devs {
		if err := d.PowerOn(ctx); err != nil {
			return err
		}
	}

	if *until == "hello" {
		select {
		case <-allDone:
		case <-ctx.Done():
		}
	} else {
		<-ctx.Done()
	}
	var sent, failed uint64
	for _, d := range devs {
		sent += d.Stats.HellosSent.Load()
		failed += d.Stats.HellosFailed.Load()
	}
	mu.Lock()
	left := make([]string, 0, len(pending))
	for id := range pending {
		left = append(left, id)
	}
	mu.Unlock()
	sort.Strings(left)
	if *until == "hello" && len(left) > 0 {
		return fmt.Errorf("%d of %d devices sent no Hello within %v: %s", len(left), *devices, *timeout, strings.Join(left, ", "))
	}
	// With --until forever, an interrupt or the timeout is the normal end.
	log.Info("run.done", "devices", *devices, "hellos_sent", sent, "hellos_failed", failed)
	return nil
}

// prepareStore gives an empty store the settings of a device an IT
// department has readied for the SCS: MEBx password changed and the
// identity's PID/PPS entered (setup mode). factory leaves it fresh.
func prepareStore(st mebx.Store, id identity.Identity, password string, factory bool) error {
	_, err := st.Load()
	if !errors.Is(err, mebx.ErrNoSettings) {
		return err // existing settings (or a store that cannot be read)
	}
	s := mebx.Defaults()
	if !factory {
		if err := s.SetPassword(password); err != nil {
			return err
		}
		if err := s.SetPIDPPS(id.PID, id.PPS); err != nil {
			return err
		}
	}
	return st.Save(s)
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
