package lan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"

	"github.com/amtsim/amtsim/nic"
)

// DNSOptions configure a DNSServer.
type DNSOptions struct {
	Host *nic.Host
	Port uint16 // default 53
	// Records map names to IPv4 addresses (A records).
	Records map[string][]netip.Addr
	TTL     uint32 // default 60
}

// DNSStats count queries by answer.
type DNSStats struct {
	Queries, Answered, NXDomain, NoData, Refused atomic.Uint64
}

// DNSServer answers A queries for its records over UDP on a segment host;
// every other name is NXDOMAIN. It is the resolver the firmware asks for
// ProvisionServer.<domain>.
type DNSServer struct {
	ttl  uint32
	mu   sync.RWMutex
	recs map[string][]netip.Addr
	srv  *dns.Server
	done chan error

	Stats DNSStats
}

// StartDNS starts serving.
func StartDNS(o DNSOptions) (*DNSServer, error) {
	if o.Host == nil {
		return nil, errors.New("lan: dns: no host")
	}
	if o.Port == 0 {
		o.Port = 53
	}
	if o.TTL == 0 {
		o.TTL = 60
	}
	pc, err := o.Host.ListenUDP(o.Port)
	if err != nil {
		return nil, fmt.Errorf("lan: dns: %w", err)
	}
	d := &DNSServer{ttl: o.TTL, recs: map[string][]netip.Addr{}, done: make(chan error, 1)}
	for name, addrs := range o.Records {
		d.Set(name, addrs...)
	}
	started := make(chan struct{})
	d.srv = &dns.Server{PacketConn: pc, Handler: d, NotifyStartedFunc: func() { close(started) }}
	go func() { d.done <- d.srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-d.done:
		return nil, fmt.Errorf("lan: dns: %w", err)
	}
	return d, nil
}

// Set replaces the A records of name.
func (d *DNSServer) Set(name string, addrs ...netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.recs[dns.CanonicalName(name)] = append([]netip.Addr(nil), addrs...)
}

// Delete removes name.
func (d *DNSServer) Delete(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.recs, dns.CanonicalName(name))
}

// ServeDNS implements dns.Handler.
func (d *DNSServer) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	d.Stats.Queries.Add(1)
	r := new(dns.Msg)
	if q.Opcode != dns.OpcodeQuery || len(q.Question) != 1 {
		d.Stats.Refused.Add(1)
		r.SetRcode(q, dns.RcodeRefused)
		_ = w.WriteMsg(r)
		return
	}
	r.SetReply(q)
	r.Authoritative = true
	qn := q.Question[0]
	d.mu.RLock()
	addrs, ok := d.recs[strings.ToLower(qn.Name)]
	d.mu.RUnlock()
	switch {
	case !ok:
		d.Stats.NXDomain.Add(1)
		r.Rcode = dns.RcodeNameError
	case qn.Qtype != dns.TypeA && qn.Qtype != dns.TypeANY:
		d.Stats.NoData.Add(1) // the name exists, but has no record of that type
	default:
		d.Stats.Answered.Add(1)
		for _, a := range addrs {
			r.Answer = append(r.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: qn.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: d.ttl},
				A:   net.IP(a.AsSlice()),
			})
		}
	}
	_ = w.WriteMsg(r)
}

// Stop shuts the server down.
func (d *DNSServer) Stop() error {
	err := d.srv.Shutdown()
	<-d.done
	return err
}
