package firmware

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/mebx"
)

// ProvisionServer is the host name an SCS is published under (docs/protocol.md
// §2).
const ProvisionServer = "ProvisionServer"

// leaseInfo is what discovery needs from a DHCP lease.
type leaseInfo struct {
	domain string
	dns    []netip.Addr
}

// candidate is one way of finding the SCS, in the firmware's order.
type candidate struct {
	name   string // DNS name; empty for an address typed into MEBx
	source string // mebx, fqdn, mebx-domain, dhcp-domain, bare
}

// candidates lists the names to try, in the real firmware's order: the SCS
// FQDN from MEBx, ProvisionServer under the MEBx domain, then under the
// DHCP option 15 domain, then bare.
func (d *Device) candidates(s mebx.Settings, l *leaseInfo) []candidate {
	var cs []candidate
	seen := map[string]bool{}
	add := func(name, source string) {
		if k := strings.ToLower(name); !seen[k] {
			seen[k] = true
			cs = append(cs, candidate{name: name, source: source})
		}
	}
	if s.SCSFQDN != "" {
		add(s.SCSFQDN, "fqdn")
	}
	if s.DomainName != "" {
		add(ProvisionServer+"."+s.DomainName, "mebx-domain")
	}
	if l != nil && l.domain != "" {
		add(ProvisionServer+"."+l.domain, "dhcp-domain")
	}
	if !d.o.NoBareName {
		add(ProvisionServer, "bare")
	}
	return cs
}

// findSCS returns the SCS address for the next Hello.
func (d *Device) findSCS(ctx context.Context, s mebx.Settings, l *leaseInfo) (netip.AddrPort, error) {
	port := s.SCSPort
	if port == 0 {
		port = mebx.DefaultSCSPort
	}
	if s.SCSAddress.IsValid() {
		ap := netip.AddrPortFrom(s.SCSAddress, port)
		d.noteSCS(ap, event.SCSConfigured, "source", "mebx")
		return ap, nil
	}
	servers := []netip.Addr{}
	if l != nil {
		servers = append(servers, l.dns...)
	} else {
		for _, a := range []netip.Addr{s.DNS1, s.DNS2} {
			if a.IsValid() {
				servers = append(servers, a)
			}
		}
	}
	if len(servers) == 0 {
		d.emit(event.SCSUnresolved, "why", "no SCS address in MEBx and no DNS server (MEBx or DHCP option 6)")
		return netip.AddrPort{}, errors.New("no SCS address and no DNS server")
	}
	var why []string
	for _, c := range d.candidates(s, l) {
		a, err := d.resolve(ctx, servers, c.name)
		if err == nil {
			ap := netip.AddrPortFrom(a, port)
			d.noteSCS(ap, event.SCSResolved, "name", c.name, "source", c.source)
			return ap, nil
		}
		if ctx.Err() != nil {
			return netip.AddrPort{}, ctx.Err()
		}
		why = append(why, fmt.Sprintf("%s: %v", c.name, err))
	}
	d.Stats.DNSFailures.Add(1)
	d.emit(event.SCSUnresolved, "why", strings.Join(why, "; "))
	return netip.AddrPort{}, fmt.Errorf("SCS not found (%s)", strings.Join(why, "; "))
}

// noteSCS reports the SCS address when it is new or has changed.
func (d *Device) noteSCS(ap netip.AddrPort, name event.Name, args ...any) {
	d.mu.Lock()
	same := d.lastSCS == ap
	d.lastSCS = ap
	d.mu.Unlock()
	if !same {
		d.emit(name, append(args, "addr", ap.String())...)
	}
}

// errNXDomain is an authoritative "no such name": no point asking again.
var errNXDomain = errors.New("NXDOMAIN")

// resolve asks each server in turn, DNSAttempts times each, for the name's
// A record, through the device's own stack. Each round waits twice as long
// as the one before (DNSTimeout, then twice that, …), as embedded resolvers
// back off: an answer late because the server is busy is still taken, and
// a busy server is not asked the same again at the same pace. In a
// synchronized Hello round of 30,000 devices on the embedded LAN, every
// query was answered, 21,673 too late for two waits of 2 s, 3 and 2,580 (two
// runs) too late for 2 s then 4 s, and none with a third wait of 8 s.
func (d *Device) resolve(ctx context.Context, servers []netip.Addr, name string) (netip.Addr, error) {
	var last error
	for attempt := range d.o.DNSAttempts {
		wait := d.o.DNSTimeout << min(attempt, 8)
		for _, server := range servers {
			a, err := d.queryA(ctx, server, name, wait)
			if err == nil || errors.Is(err, errNXDomain) || ctx.Err() != nil {
				return a, err
			}
			last = err
		}
	}
	return netip.Addr{}, last
}

// queryA sends one query and waits for its answer. Datagrams that are not
// a readable answer to it are counted and skipped: a broken or stray packet
// does not end the wait.
func (d *Device) queryA(ctx context.Context, server netip.Addr, name string, timeout time.Duration) (netip.Addr, error) {
	h := d.hostNow()
	if h == nil {
		return netip.Addr{}, errors.New("powered off")
	}
	c, err := h.DialUDP(netip.AddrPortFrom(server, 53))
	if err != nil {
		return netip.Addr{}, err
	}
	// PowerOff closes the query's socket with the device's other
	// connections, ending the wait at once; an owner's ended context stops
	// the Hello slot before the next query.
	if !d.hold(c) {
		return netip.Addr{}, errors.New("powered off")
	}
	defer d.release(c)
	defer c.Close()
	if err := ctx.Err(); err != nil {
		return netip.Addr{}, err
	}

	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	d.mu.Lock()
	q.Id = uint16(d.rand.Uint32())
	d.mu.Unlock()
	out, err := q.Pack()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("dns: %w", err)
	}
	d.Stats.DNSQueries.Add(1)
	wait := clock.RealDuration(d.clock, clock.AtLeastReal(d.clock, timeout, d.o.NetFloor))
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write(out); err != nil {
		return netip.Addr{}, fmt.Errorf("dns query to %s: %w", server, err)
	}
	// The query has no EDNS record, so an answer is at most 512 bytes (RFC
	// 1035 §4.2.1; a longer one comes truncated, TC set). A datagram past
	// that is read short, fails to parse and is counted as malformed, as
	// in a resolver with a 512-byte buffer.
	buf := make([]byte, dns.MinMsgSize)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err) {
				return netip.Addr{}, fmt.Errorf("no answer from %s", server)
			}
			return netip.Addr{}, fmt.Errorf("dns from %s: %w", server, err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil {
			d.Stats.DNSMalformed.Add(1)
			d.emit(event.DNSMalformed, "server", server.String(), "bytes", n, "err", err.Error())
			continue
		}
		if r.Id != q.Id || !r.Response || len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, q.Question[0].Name) {
			continue // not the answer to this query
		}
		switch r.Rcode {
		case dns.RcodeSuccess:
		case dns.RcodeNameError:
			return netip.Addr{}, fmt.Errorf("%w from %s", errNXDomain, server)
		default:
			return netip.Addr{}, fmt.Errorf("%s from %s", dns.RcodeToString[r.Rcode], server)
		}
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
					return ip, nil
				}
			}
		}
		return netip.Addr{}, fmt.Errorf("no A record from %s", server)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
