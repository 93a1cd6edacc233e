package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/lan"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
	"github.com/amtsim/amtsim/scs"
)

// EmbeddedOptions configure the embedded default: the LAN, the reference
// SCS on it at the ProvisionServer address, and a fleet.
type EmbeddedOptions struct {
	Fleet Options // Uplink and Stacks are set by StartEmbedded
	// Dir keeps the SCS database and CA; "" uses a temporary directory,
	// removed as soon as they are open (nothing of it outlives the
	// process, however it ends).
	Dir string
	// SCS adjusts the SCS's options before it starts (DB, CA, Dial and
	// Password are set already).
	SCS func(*scs.ServerOptions)
	LAN lan.NetworkOptions
	// PKI provisions by remote configuration instead of PSK: the SCS's CA
	// issues a provisioning certificate for ProvisionServer.<domain>, the
	// devices boot factory-fresh with the CA's hash in their table, and
	// they send the PKI Hello.
	PKI bool
	// Groups are more fleets on the same LAN and SCS, each under its own
	// Fleet.Shard (so no identity is shared). Their Uplink and Stacks are
	// set too.
	Groups []Group
}

// Group is one more fleet of the embedded default.
type Group struct {
	Fleet Options
	// PKI readies the group for remote configuration, as EmbeddedOptions.PKI.
	PKI bool
	// Unlisted leaves the group out of the SCS's database: its Hellos carry
	// PIDs (or UUIDs) the SCS does not know.
	Unlisted bool
}

// Embedded is a running embedded default.
type Embedded struct {
	Net    *lan.Network
	Stacks *nic.Stacks
	DB     *scs.DB
	CA     *scs.CA
	Fleet  *Fleet
	Groups []*Fleet // EmbeddedOptions.Groups' fleets, in order

	o       EmbeddedOptions
	host    *nic.Host
	tmp     string
	mu      sync.Mutex
	srv     *scs.Server
	ln      *nic.Listener
	pki     *tls.Certificate
	servers []*scs.Server // every SCS run, for the summary
}

// StartEmbedded starts the LAN and the SCS, and makes the fleet (call
// Fleet.Start to power it on).
func StartEmbedded(ctx context.Context, o EmbeddedOptions) (*Embedded, error) {
	e := &Embedded{o: o}
	ok := false
	defer func() {
		if !ok {
			e.Close()
		}
	}()
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "amtsim-scs-")
		if err != nil {
			return nil, err
		}
		e.tmp, o.Dir = d, d
		e.o.Dir = d
	}
	var err error
	if e.Net, err = lan.StartNetwork(o.LAN); err != nil {
		return nil, err
	}
	e.Stacks = nic.NewStacks(nic.StackOptions{})
	if e.host, err = e.Net.AddSCSHost(); err != nil {
		return nil, err
	}
	if e.DB, err = scs.OpenDB(filepath.Join(o.Dir, "scs.db")); err != nil {
		return nil, err
	}
	if e.CA, err = scs.LoadOrCreateCA(o.Dir); err != nil {
		return nil, err
	}
	groups := append([]Group{{Fleet: o.Fleet, PKI: o.PKI}}, o.Groups...)
	for i, g := range groups {
		fo := g.Fleet
		fo.Uplink, fo.Stacks = e.Net.Segment, e.Stacks
		if g.PKI {
			if e.pki == nil {
				if e.pki, err = e.CA.ProvisioningCertificate(firmware.ProvisionServer + "." + e.Net.Domain()); err != nil {
					return nil, err
				}
			}
			fo.Factory = true
			fo.MEBx = append([]string{"pki.hash=" + e.CA.RootHashEntry()}, fo.MEBx...)
		}
		if !g.Unlisted {
			var progress func(done, total int)
			if fo.Setup != nil {
				progress = func(done, total int) { fo.Setup("database", done, total) }
			}
			g, err := e.DB.Generate(ctx, fo.Seed, []int{fo.Shard}, fo.Devices, "", progress)
			if err != nil {
				return nil, err
			}
			// A device left out would Hello until the run times out.
			if err := g.ClashErr(); err != nil {
				return nil, fmt.Errorf("fleet: the database in %s: %w", o.Dir, err)
			}
		}
		f, err := New(ctx, fo)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			e.Fleet = f
		} else {
			e.Groups = append(e.Groups, f)
		}
	}
	if err := e.StartSCS(ctx); err != nil {
		return nil, err
	}
	if e.tmp != "" {
		// The CA's key and the PPS database are open or in memory from
		// here on: their directory goes now, so that not even a kill -9
		// leaves a secret behind (the journal is written through its open
		// descriptor, and a restarted SCS reuses what is in memory).
		e.DB.Temporary()
		if err := os.RemoveAll(e.tmp); err != nil {
			return nil, fmt.Errorf("fleet: remove the SCS's temporary directory: %w", err)
		}
	}
	ok = true
	return e, nil
}

// StartSCS starts (or restarts) the SCS on the segment.
func (e *Embedded) StartSCS(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		return errors.New("fleet: the SCS is running")
	}
	// The queue holds the whole fleet: a Hello dropped on a full queue is
	// answered only by the device's next one, which the Hello schedule
	// puts minutes away once its first five have gone unanswered (a
	// 20,000-device run sat idle for 80 s at a time with the default).
	so := scs.ServerOptions{DB: e.DB, CA: e.CA, Password: e.o.Fleet.Password, Profile: scs.DefaultProfile(e.Net.Domain()),
		Dial: e.host.DialContext, Queue: e.devices(), HelloConns: nic.ListenBacklog, PKI: e.pki}
	if e.o.SCS != nil {
		e.o.SCS(&so)
	}
	srv, err := scs.NewServer(so)
	if err != nil {
		return err
	}
	srv.Start(ctx)
	ln, err := e.host.Listen(mebx.DefaultSCSPort, srv.HandleConn)
	if err != nil {
		srv.Stop()
		return fmt.Errorf("fleet: SCS listener: %w", err)
	}
	e.srv, e.ln = srv, ln
	e.servers = append(e.servers, srv)
	return nil
}

// StopSCS stops the SCS: its port closes and sessions in progress end.
func (e *Embedded) StopSCS() {
	e.mu.Lock()
	srv, ln := e.srv, e.ln
	e.srv, e.ln = nil, nil
	e.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	if srv != nil {
		srv.Stop()
	}
}

// SCSSummary is the SCS side of a run, over every start of the SCS.
type SCSSummary struct {
	Hellos      uint64 `json:"hellos"`
	Unknown     uint64 `json:"unknown"`
	Duplicates  uint64 `json:"duplicates"`
	Dropped     uint64 `json:"dropped"`
	Refused     uint64 `json:"refused"` // Hello connections closed unread
	Sessions    uint64 `json:"sessions"`
	Provisioned uint64 `json:"provisioned"`
	Failed      uint64 `json:"failed"`
	Aborted     uint64 `json:"aborted"` // cut short by the SCS's stop
	// Redrawn counts new PIDs drawn again: another record held them, or
	// they were the device's own or some device's factory PID.
	Redrawn  uint64                    `json:"pid_redraws"`
	Failures map[string]map[string]int `json:"failures_by_step"`
	Session  Latency                   `json:"session"`
}

// SCSSummary adds up the SCS's counts.
func (e *Embedded) SCSSummary() SCSSummary {
	e.mu.Lock()
	servers := append([]*scs.Server(nil), e.servers...)
	e.mu.Unlock()
	s := SCSSummary{Failures: map[string]map[string]int{}}
	var lat []time.Duration
	for _, srv := range servers {
		st := &srv.Stats
		s.Hellos += st.Hellos.Load()
		s.Unknown += st.Unknown.Load()
		s.Duplicates += st.Duplicates.Load()
		s.Dropped += st.Dropped.Load()
		s.Refused += st.Refused.Load()
		s.Sessions += st.Sessions.Load()
		s.Provisioned += st.Provisioned.Load()
		s.Failed += st.Failed.Load()
		s.Aborted += st.Aborted.Load()
		s.Redrawn += st.Redrawn.Load()
		for step, m := range srv.Failures() {
			if s.Failures[step] == nil {
				s.Failures[step] = map[string]int{}
			}
			for r, n := range m {
				s.Failures[step][r] += n
			}
		}
		lat = append(lat, srv.Latencies()...)
	}
	s.Session = Percentiles(lat)
	return s
}

// devices counts the devices of every group.
func (e *Embedded) devices() int {
	n := e.o.Fleet.Devices
	for _, g := range e.o.Groups {
		n += g.Fleet.Devices
	}
	return n
}

// Close stops everything and removes a temporary directory.
func (e *Embedded) Close() {
	for _, f := range e.Groups {
		f.Stop()
	}
	if e.Fleet != nil {
		e.Fleet.Stop()
	}
	e.StopSCS()
	if e.DB != nil {
		_ = e.DB.Close()
	}
	if e.Stacks != nil {
		e.Stacks.Close()
	}
	if e.Net != nil {
		e.Net.Close()
	}
	if e.tmp != "" {
		_ = os.RemoveAll(e.tmp)
	}
}

// Wait returns nil once every device is provisioned and the SCS has
// recorded it so (its verifying login done) and counted it, or ctx's
// error. The count follows the record by a moment; a summary taken
// between the two would be one short.
func (e *Embedded) Wait(ctx context.Context) error {
	if err := e.Fleet.Wait(ctx); err != nil {
		return err
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		// The count first: reading the database copies every record.
		if n := len(e.Fleet.devs); e.counted() >= n && e.recorded() >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// counted is what the SCS servers, the stopped ones included, have counted
// as provisioned.
func (e *Embedded) counted() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := uint64(0)
	for _, srv := range e.servers {
		n += srv.Stats.Provisioned.Load()
	}
	return int(n)
}

// recorded counts the database's provisioned records.
func (e *Embedded) recorded() int {
	n := 0
	for _, r := range e.DB.All() {
		if r.State == scs.StateProvisioned {
			n++
		}
	}
	return n
}
