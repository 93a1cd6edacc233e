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
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/amtsim/amtsim/dhcp"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/lan"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
)

// cmdRun boots devices as far as the foundation goes today: power on, link
// up, an address from DHCP (or static settings in MEBx), the SCS address
// from MEBx or from DNS (ProvisionServer.<domain>), and the AMT ports 16992
// and 16993 listening. The Hello and provisioning follow in the firmware.
func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	devices := fs.Int("devices", 2, "how many devices to boot")
	seed := fs.Uint64("seed", 1, "identity seed")
	shard := fs.Int("shard", 0, "identity shard")
	storePath := fs.String("store", "", "MEBx store file of the first device (default: factory settings in memory)")
	uplink := fs.String("uplink", "embedded", "embedded | tap:NAME")
	pcapPath := fs.String("pcap", "", "write the first device's frames to this pcap file")
	logFormat := fs.String("log-format", "text", "text | json")
	timeout := fs.Duration("timeout", 30*time.Second, "give up on a device after this long")
	if _, err := parseInterleaved(fs, args); err != nil {
		return err
	}
	var log *slog.Logger
	switch *logFormat {
	case "text":
		log = slog.New(slog.NewTextHandler(stdout, nil))
	case "json":
		log = slog.New(slog.NewJSONHandler(stdout, nil))
	default:
		return usageError{fmt.Sprintf("run: --log-format %q (want text or json)", *logFormat)}
	}
	if *devices < 1 {
		return usageError{"run: --devices must be at least 1"}
	}

	var up nic.Uplink
	switch {
	case *uplink == "embedded":
		netw, err := lan.StartNetwork(lan.NetworkOptions{})
		if err != nil {
			return err
		}
		defer netw.Close()
		log.Info("lan.up", "subnet", netw.Subnet().String(), "dhcp_dns", netw.Gateway().String(),
			"domain", netw.Domain(), "provision_server", netw.SCS().String())
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

	stacks := nic.NewStacks(nic.StackOptions{})
	defer stacks.Close()

	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed []string
	)
	for i := range *devices {
		id, err := identity.Of(*seed, *shard, i)
		if err != nil {
			return err
		}
		var store mebx.Store = mebx.NewMemStore()
		if i == 0 && *storePath != "" {
			store = mebx.NewFileStore(*storePath)
		}
		settings, err := store.Load()
		if errors.Is(err, mebx.ErrNoSettings) {
			settings, err = mebx.Defaults(), nil
		}
		if err != nil {
			return err
		}
		var capture *nic.Capture
		if i == 0 && *pcapPath != "" {
			if capture, err = nic.CreateCapture(*pcapPath); err != nil {
				return err
			}
			defer capture.Close()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			dctx, cancel := context.WithTimeout(ctx, *timeout)
			defer cancel()
			dlog := log.With("device", id.HostName, "mac", id.MAC.String())
			if err := boot(dctx, dlog, id, settings, up, stacks, capture); err != nil {
				dlog.Error("boot.failed", "err", err.Error())
				mu.Lock()
				failed = append(failed, id.HostName)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d devices did not come up: %s", len(failed), *devices, strings.Join(failed, ", "))
	}
	log.Info("run.done", "devices", *devices,
		"shows", "power on → link up → address → SCS address → AMT ports listening; the Hello and provisioning come with the firmware")
	return nil
}

func boot(ctx context.Context, log *slog.Logger, id identity.Identity, s mebx.Settings, up nic.Uplink, stacks *nic.Stacks, capture *nic.Capture) error {
	c, err := nic.New(nic.Options{MAC: id.MAC, Uplink: up, Capture: capture})
	if err != nil {
		return err
	}
	vendor, device := c.PCIID()
	log.Info("power.on", "uuid", id.UUID.String(), "service_tag", id.ServiceTag,
		"pci", fmt.Sprintf("%04x:%04x", vendor, device), "nic", nic.Model, "state", s.State.String())
	h, err := stacks.Attach(c)
	if err != nil {
		return err
	}
	log.Info("link.up")

	var dnsServers []netip.Addr
	domain := s.DomainName
	if s.DHCP {
		cl := dhcp.NewClient(dhcp.ClientOptions{Link: c, HostName: id.HostName, Retransmit: time.Second})
		c.SetRawHandler(cl.HandleFrame)
		l, err := cl.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("dhcp: %w", err)
		}
		var gw netip.Addr
		if len(l.Routers) > 0 {
			gw = l.Routers[0]
		}
		if err := h.SetAddress(l.Addr, gw); err != nil {
			return err
		}
		dnsServers = l.DNS
		if domain == "" {
			domain = l.Domain
		}
		log.Info("dhcp.bound", "ip", l.Addr.String(), "gateway", gw.String(), "dns", fmt.Sprint(l.DNS),
			"domain", l.Domain, "lease", l.Duration.String(), "server", l.ServerID.String())
	} else {
		p, err := s.Prefix()
		if err != nil {
			return err
		}
		if err := h.SetAddress(p, s.Gateway); err != nil {
			return err
		}
		for _, d := range []netip.Addr{s.DNS1, s.DNS2} {
			if d.IsValid() {
				dnsServers = append(dnsServers, d)
			}
		}
		log.Info("address.static", "ip", p.String(), "gateway", s.Gateway.String())
	}

	switch {
	case s.SCSAddress.IsValid():
		log.Info("scs.configured", "addr", netip.AddrPortFrom(s.SCSAddress, s.SCSPort).String(), "source", "mebx")
	default:
		name := "ProvisionServer." + domain
		a, err := resolveA(ctx, h, dnsServers, name)
		if err != nil {
			return fmt.Errorf("resolve %s: %w", name, err)
		}
		log.Info("scs.resolved", "name", name, "addr", netip.AddrPortFrom(a, s.SCSPort).String())
	}

	for _, port := range []uint16{16992, 16993} {
		_, err := h.Listen(port, func(conn net.Conn) {
			log.Info("conn.accepted", "port", port, "peer", conn.RemoteAddr().String())
			conn.Close()
		})
		if err != nil {
			return err
		}
	}
	log.Info("amt.listening", "ports", "16992,16993")
	return nil
}

func resolveA(ctx context.Context, h *nic.Host, servers []netip.Addr, name string) (netip.Addr, error) {
	if len(servers) == 0 {
		return netip.Addr{}, errors.New("no DNS server known")
	}
	var last error
	for attempt := range 3 {
		server := servers[attempt%len(servers)]
		a, err := queryA(ctx, h, server, name)
		if err == nil {
			return a, nil
		}
		last = err
	}
	return netip.Addr{}, last
}

func queryA(ctx context.Context, h *nic.Host, server netip.Addr, name string) (netip.Addr, error) {
	c, err := h.DialUDP(netip.AddrPortFrom(server, 53))
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	deadline := time.Now().Add(2 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	co := &dns.Conn{Conn: c}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	if err := co.WriteMsg(q); err != nil {
		return netip.Addr{}, err
	}
	r, err := co.ReadMsg()
	if err != nil {
		return netip.Addr{}, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return netip.Addr{}, fmt.Errorf("%s from %s", dns.RcodeToString[r.Rcode], server)
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("no A record in the answer from %s", server)
}
