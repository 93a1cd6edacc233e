package main

import (
	"flag"
	"io"
	"log/slog"
	"net"
	"strings"

	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/nic"
)

// uplink is what --uplink (and --create) asked for.
type uplink struct {
	embedded bool
	tap      string
	packet   string
	create   bool
}

func parseUplink(fs *flag.FlagSet, s string, create bool) (uplink, error) {
	switch {
	case s == "embedded":
		if create {
			return uplink{}, bad(fs, "--create goes with --uplink tap:NAME")
		}
		return uplink{embedded: true}, nil
	case strings.HasPrefix(s, "tap:") && len(s) > len("tap:") && len(s) <= len("tap:")+15:
		return uplink{tap: strings.TrimPrefix(s, "tap:"), create: create}, nil
	case strings.HasPrefix(s, "packet:") && len(s) > len("packet:") && len(s) <= len("packet:")+15:
		if create {
			return uplink{}, bad(fs, "--create goes with --uplink tap:NAME; a packet: interface must exist")
		}
		return uplink{packet: strings.TrimPrefix(s, "packet:")}, nil
	}
	return uplink{}, bad(fs, "--uplink %q: want embedded, tap:NAME or packet:IFACE (an interface name of 1 to 15 characters)", s)
}

// name is the flag's value, for logs.
func (u uplink) name() string {
	switch {
	case u.embedded:
		return "embedded"
	case u.packet != "":
		return "packet:" + u.packet
	}
	return "tap:" + u.tap
}

// openWire opens a TAP or packet uplink.
func (u uplink) openWire(h slog.Handler, devices int) (nic.Uplink, io.Closer, error) {
	if u.packet != "" {
		return u.openPacket(h, devices)
	}
	tap, err := u.open(h, devices)
	if err != nil {
		return nil, nil, err
	}
	return tap, tap, nil
}

// openPacket opens the packet uplink and says so (packet.opened), and
// what will keep the devices from working there (packet.warning), and
// later mac.duplicate as the TAP does.
func (u uplink) openPacket(h slog.Handler, devices int) (nic.Uplink, io.Closer, error) {
	log := slog.New(h)
	p, err := nic.OpenPacket(nic.PacketOptions{Name: u.packet, OnDuplicateMAC: func(mac net.HardwareAddr) {
		log.Warn(string(event.MACDuplicate), "packet", u.packet, "mac", mac.String(),
			"why", "another host on this segment sends with a device's MAC (a second amtsim with the same --seed and --shard?)")
	}})
	if err != nil {
		return nil, nil, err
	}
	log.Info(string(event.PacketOpened), "packet", u.packet, "promiscuous", "for this run")
	for _, pr := range append(p.Problems(), nic.NeighborProblem(devices)) {
		if pr != "" {
			log.Warn(string(event.PacketWarning), "packet", u.packet, "problem", pr)
		}
	}
	return p, p, nil
}

// open opens the TAP and says what stands between it and a network:
// tap.opened, then a tap.warning for each problem (down; on no bridge and
// with no address or route), and later mac.duplicate when another host
// sends with one of the devices' MACs.
func (u uplink) open(h slog.Handler, devices int) (*nic.TAP, error) {
	log := slog.New(h)
	tap, err := nic.OpenTAP(nic.TAPOptions{Name: u.tap, Create: u.create, OnDuplicateMAC: func(mac net.HardwareAddr) {
		log.Warn(string(event.MACDuplicate), "tap", u.tap, "mac", mac.String(),
			"why", "another host on this segment sends with a device's MAC (a second amtsim with the same --seed and --shard?)")
	}})
	if err != nil {
		return nil, err
	}
	st, err := tap.State()
	if err != nil {
		tap.Close()
		return nil, err
	}
	log.Info(string(event.TAPOpened), "tap", u.tap, "created", tap.Created(), "up", st.Up, "bridge", st.Bridge, "addrs", strings.Join(st.Addrs, ","))
	for _, p := range append(st.Problems(), nic.NeighborProblem(devices)) {
		if p != "" {
			log.Warn(string(event.TAPWarning), "tap", u.tap, "problem", strings.ReplaceAll(p, "<name>", u.tap))
		}
	}
	return tap, nil
}
