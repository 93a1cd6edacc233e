package scs

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/hello"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/wsman"
)

// ServerOptions configure the reference SCS.
type ServerOptions struct {
	DB *DB
	// CA issues the devices' TLS certificates; nil provisions without TLS
	// (with NoTLS) or fails the certificate step.
	CA *CA
	// Profile is what every device gets: admin and users, domain,
	// Kerberos. NewPID/NewPPS, host name and Certify are filled per device.
	Profile Profile
	// Password is the MEBx password devices were readied with, for records
	// that name none.
	Password string
	// NoTLS provisions over plain 16992 with Digest only.
	NoTLS bool
	// PKI, when set, answers PKI Hellos (version 3) too: remote
	// configuration with this provisioning certificate chain (CA's
	// ProvisioningCertificate). PSK Hellos are answered as ever.
	PKI *tls.Certificate
	// Dial opens connections to devices (default net.Dialer).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Workers is how many sessions run at once (default 16 per core); Queue
	// how many Hellos may wait for a worker (default 4096). A Hello that
	// finds the queue full is dropped: the device sends another.
	Workers, Queue int
	// HelloConns bounds the Hello connections read at once (default
	// 1,024, which leaves a real host's descriptors for sessions when
	// peers connect and send nothing); one past it is closed unread and
	// counted as refused. A listener that queues more (the embedded LAN's,
	// nic.ListenBacklog) should be matched: a synchronized round of a big
	// fleet arrives at once.
	HelloConns int
	// MaxAttempts is how often a device is retried after a failed session
	// before the SCS waits for its next Hello (default 5); retries back off
	// from RetryBase (default 1 s), doubling.
	MaxAttempts int
	RetryBase   time.Duration
	// SettleEvery is how often the SCS looks for records left with a
	// pending new pair (a device that committed and vanished before the
	// SCS could learn so) and tries to settle them; default 1 min. It
	// gives a record up after SettleFor (default 24 h), with an
	// scs.unsettled event; amtsim_scs_unsettled_records counts the rest.
	SettleEvery, SettleFor time.Duration
	// SessionTimeout bounds one provisioning session (default 2 min);
	// CallTimeout each request in it (default 20 s).
	SessionTimeout time.Duration
	CallTimeout    time.Duration
	// NoVerify skips the login with the new credentials after the commit.
	NoVerify bool
	// VerifyWindow is how long the login with the new credentials keeps
	// trying while the device re-arms its ports after the commit (default
	// 10 s; a loaded machine can take seconds).
	VerifyWindow time.Duration
	// Events receives the SCS's structured events; nil discards them.
	Events func(Event)
	// Metrics, if set, gets the SCS's Prometheus collectors.
	Metrics prometheus.Registerer
	// Flaws are bugs put in on purpose, to show that a scenario catches
	// an SCS that has them; all off in any real use.
	Flaws Flaws
	// Rand is where new PID/PPS pairs come from (default crypto/rand).
	Rand io.Reader
}

// Flaws are deliberate SCS bugs, each one that field SCSs have had.
type Flaws struct {
	// ForgetCommit takes a lost answer to CommitChanges, or a failure
	// after it, for a session that failed before it: the retry is a whole
	// new TLS-PSK session with the old pair, which a device that did
	// commit refuses, instead of a login with the new credentials that
	// finds it provisioned.
	ForgetCommit bool
	// TrustAnswers goes on past a call the device refused (a ReturnValue
	// other than 0) and skips the login after the commit: an SCS that
	// believes what it expects to hear.
	TrustAnswers bool
	// UncheckedProfile starts with a profile the devices would refuse
	// (Profile.Validate), to show them refusing it.
	UncheckedProfile bool
	// NoCallTimeout waits for every answer as long as the session lasts:
	// a device that lost power mid-call holds its session to the end.
	NoCallTimeout bool
	// IgnoreStale gives up a call the device answered 401 with stale=true
	// (its Digest nonce expired), where it should send again with the
	// fresh nonce: the session fails and starts over.
	IgnoreStale bool
	// ForgetPending starts without the records a stop left mid-session
	// and runs no settling scan: a device whose commit went through just
	// before the stop is provisioned, sends no Hello, and its record waits
	// for one for ever.
	ForgetPending bool
}

// Event is one thing the SCS did.
type Event struct {
	Time  time.Time
	Name  event.Name
	PID   string
	Attrs []slog.Attr
}

// LogSink writes events through a slog handler, one record each.
func LogSink(h slog.Handler) func(Event) {
	return func(e Event) {
		r := slog.NewRecord(e.Time, e.Name.Level(), string(e.Name), 0)
		if e.PID != "" {
			r.AddAttrs(slog.String("pid", e.PID))
		}
		r.AddAttrs(e.Attrs...)
		_ = h.Handle(context.Background(), r)
	}
}

// ServerStats count what the SCS did. They only grow.
type ServerStats struct {
	Hellos      atomic.Uint64 // Hellos read
	Unknown     atomic.Uint64 // Hellos from PIDs not in the database
	Duplicates  atomic.Uint64 // Hellos from devices already queued or in session
	Conflicts   atomic.Uint64 // Hellos for a PID in flight from another address
	Dropped     atomic.Uint64 // Hellos that found the queue full
	Refused     atomic.Uint64 // Hello connections closed unread, past HelloConns
	Malformed   atomic.Uint64 // connections that carried no readable Hello
	Sessions    atomic.Uint64 // sessions started
	Provisioned atomic.Uint64 // sessions that ended provisioned (and verified)
	Failed      atomic.Uint64 // sessions that failed
	Aborted     atomic.Uint64 // sessions cut short by Stop
	// Redrawn counts new PIDs drawn again because a record held them
	// already, or they were the device's own or some device's factory PID.
	Redrawn atomic.Uint64
}

// Server is the reference SCS: it hears Hellos, queues them, and provisions
// each device over a session of its own.
type Server struct {
	o     ServerOptions
	Stats ServerStats
	rx    *hello.Receiver
	m     *metrics
	// rootSHA1 and rootSHA256 are the provisioning root's hashes, which a
	// PKI Hello must carry one of; nil without PKI.
	rootSHA1, rootSHA256 []byte

	mu sync.Mutex
	// inflight holds the jobs queued or in session, by record PID and the
	// address they go to (inflightKey): a Hello is a claim, not a proof,
	// and a second address claiming a PID in flight is a candidate of its
	// own, not a replacement or a duplicate. perPID counts them, and
	// pidLocks serialize a record's sessions.
	inflight map[string]bool
	perPID   map[string]int
	pidLocks map[string]*pidLock
	// unsettled: when the settling scan first found each record with a
	// pending pair (by record PID), for SettleFor.
	unsettled map[string]time.Time
	gaveUp    map[string]bool
	failures  map[string]map[string]int
	latency   []time.Duration
	queue     chan job
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	started   bool
}

type job struct {
	pid     string // the PID the device Hello-ed with
	rec     string // the record's PID when queued
	key     string // inflightKey(rec, addr)
	addr    netip.Addr
	attempt int
	// settle only checks a record left with a new pair by a session that
	// ended without the SCS learning its outcome (an SCS restart): a login
	// with the new credentials says whether the device committed.
	settle bool
	// pki is a PKI Hello's job: the session proves itself with the
	// provisioning certificate, not PID/PPS; adminSet is the Hello's flag
	// (the MEBx password has been changed from the factory's).
	pki, adminSet bool
}

// NewServer checks o and returns a stopped server.
func NewServer(o ServerOptions) (*Server, error) {
	if o.DB == nil {
		return nil, errors.New("scs: a server needs a DB")
	}
	if o.CA == nil && !o.NoTLS {
		return nil, errors.New("scs: a server needs a CA unless it provisions without TLS")
	}
	if !o.Flaws.UncheckedProfile {
		if err := o.Profile.Validate(); err != nil {
			return nil, err
		}
	}
	if o.Workers <= 0 {
		o.Workers = 16 * runtime.GOMAXPROCS(0)
	}
	if o.Queue <= 0 {
		o.Queue = 4096
	}
	if o.VerifyWindow <= 0 {
		o.VerifyWindow = 10 * time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 5
	}
	if o.RetryBase <= 0 {
		o.RetryBase = time.Second
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 20 * time.Second
	}
	if o.Flaws.NoCallTimeout {
		o.CallTimeout = 0
	}
	if o.Flaws.TrustAnswers {
		o.NoVerify = true
	}
	if o.SettleEvery <= 0 {
		o.SettleEvery = time.Minute
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.SettleFor <= 0 {
		o.SettleFor = 24 * time.Hour
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 2 * time.Minute
	}
	if o.Dial == nil {
		var d net.Dialer
		o.Dial = d.DialContext
	}
	if o.Profile.AdminUser == "" {
		o.Profile.AdminUser = "admin"
	}
	s := &Server{o: o, inflight: map[string]bool{}, perPID: map[string]int{}, pidLocks: map[string]*pidLock{}, unsettled: map[string]time.Time{}, gaveUp: map[string]bool{}, failures: map[string]map[string]int{}, queue: make(chan job, o.Queue)}
	if o.DB != nil {
		// Writes wait for each other only while devices wait for a
		// worker: then the CPU an fsync costs is what holds them up, and
		// otherwise a session's own latency counts.
		o.DB.GatherWhile(func() bool { return len(s.queue) > 0 })
	}
	if o.PKI != nil && len(o.PKI.Certificate) > 0 {
		root := o.PKI.Certificate[len(o.PKI.Certificate)-1]
		s1, s256 := sha1.Sum(root), sha256.Sum256(root)
		s.rootSHA1, s.rootSHA256 = s1[:], s256[:]
	}
	s.rx = hello.NewReceiver(hello.ReceiverOptions{Handle: s.onHello, MaxConns: o.HelloConns, OnRefused: func(netip.AddrPort) {
		s.Stats.Refused.Add(1)
		s.m.hello("refused")
	}, OnError: func(from netip.AddrPort, err error) {
		s.Stats.Malformed.Add(1)
		s.m.hello("malformed")
		s.emit(event.HelloBad, "", "from", from.String(), "err", err.Error())
	}, OnAcceptError: func(err error, n uint64) {
		s.emit(event.SCSAcceptError, "", "err", err.Error(), "count", n)
	}})
	m, err := newMetrics(o.Metrics)
	if err != nil {
		return nil, err
	}
	s.m = m
	return s, nil
}

// Start runs the workers until ctx ends or Stop.
func (s *Server) Start(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return
	}
	s.started = true
	s.ctx, s.cancel = context.WithCancel(ctx)
	for range s.o.Workers {
		s.wg.Add(1)
		go pprof.Do(context.Background(), scsLabel, func(context.Context) { s.worker() })
	}
	var pending int
	if !s.o.Flaws.ForgetPending {
		pending, _ = s.queueSettlingLocked(s.o.DB.Pending())
		s.wg.Add(1)
		go s.settleLoop()
	}
	s.emit(event.SCSStarted, "", "workers", s.o.Workers, "queue", s.o.Queue, "tls", !s.o.NoTLS, "settling", pending)
}

// queueSettlingLocked queues a settling job for every record of pending
// (DB.Pending, read before s.mu was taken) not in flight, and returns how
// many it queued and the records it gives up now, past SettleFor (s.mu
// held).
func (s *Server) queueSettlingLocked(pending []Record) (queued int, gaveUp []string) {
	left := 0
	now := time.Now()
	seen := map[string]bool{}
	for _, r := range pending {
		addr, err := netip.ParseAddr(r.Addr)
		if err != nil {
			continue
		}
		seen[r.PID] = true
		if s.perPID[r.PID] > 0 {
			continue // in a session, or being settled
		}
		left++
		first, ok := s.unsettled[r.PID]
		if !ok {
			s.unsettled[r.PID], first = now, now
		}
		if now.Sub(first) > s.o.SettleFor {
			if !s.gaveUp[r.PID] {
				s.gaveUp[r.PID] = true
				gaveUp = append(gaveUp, r.PID)
			}
			continue
		}
		key := inflightKey(r.PID, addr)
		select {
		case s.queue <- job{pid: r.PID, key: key, rec: r.PID, addr: addr, settle: true}:
			s.hold(r.PID, key)
			queued++
		default:
		}
	}
	for pid := range s.unsettled {
		if !seen[pid] {
			delete(s.unsettled, pid)
			delete(s.gaveUp, pid)
		}
	}
	s.m.unsettled.Set(float64(left))
	return queued, gaveUp
}

// settleLoop settles what is left, every SettleEvery, until Stop: a
// provisioned device sends no Hello, so nothing else would bring its
// record back.
func (s *Server) settleLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.o.SettleEvery)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			pending := s.o.DB.Pending()
			s.mu.Lock()
			var gaveUp []string
			if s.started {
				_, gaveUp = s.queueSettlingLocked(pending)
			}
			s.mu.Unlock()
			for _, pid := range gaveUp {
				s.emit(event.SCSUnsettled, pid, "given_up", true, "after", s.o.SettleFor.String())
			}
		}
	}
}

// Stop ends every session in progress and waits for the workers. Hellos
// queued are forgotten: the devices send more.
func (s *Server) Stop() {
	s.mu.Lock()
	if !s.started {
		s.mu.Unlock()
		return
	}
	s.started = false
	s.cancel()
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	for len(s.queue) > 0 {
		<-s.queue
	}
	s.inflight, s.perPID = map[string]bool{}, map[string]int{}
	s.mu.Unlock()
	s.emit(event.SCSStopped, "")
}

// HandleConn reads the Hello on one accepted connection (for listeners
// that hand out connections, like nic.Host.Listen).
func (s *Server) HandleConn(c net.Conn) {
	pprof.Do(context.Background(), scsLabel, func(context.Context) { s.rx.ServeConn(c) })
}

// scsLabel marks the SCS's goroutines in CPU profiles, so that a process
// running devices and the SCS together can tell their costs apart.
var scsLabel = pprof.Labels("amtsim", "scs")

// Serve reads Hellos from ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error { return s.rx.Serve(ctx, ln) }

func (s *Server) emit(name event.Name, pid string, args ...any) {
	if s.o.Events == nil {
		return
	}
	r := slog.NewRecord(time.Time{}, 0, "", 0)
	r.Add(args...)
	attrs := make([]slog.Attr, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a); return true })
	s.o.Events(Event{Time: time.Now(), Name: name, PID: pid, Attrs: attrs})
}

func (s *Server) onHello(r hello.Received) {
	s.Stats.Hellos.Add(1)
	pid := r.Message.PID
	var rec Record
	var ok bool
	if r.Version == hello.VersionPKI {
		if why := s.refusePKI(r.Message); why != "" {
			s.Stats.Unknown.Add(1)
			s.m.hello("unknown")
			s.emit(event.HelloUnknown, "", "from", r.From.String(), "uuid", r.UUID.String(), "reason", why)
			return
		}
		rec, ok = s.o.DB.ByUUID(r.UUID.String())
		pid = rec.PID
	} else {
		rec, ok = s.o.DB.Get(pid)
	}
	if !ok {
		s.Stats.Unknown.Add(1)
		s.m.hello("unknown")
		s.emit(event.HelloUnknown, pid, "from", r.From.String(), "uuid", r.UUID.String(), "reason", "not in the database")
		return
	}
	s.mu.Lock()
	if !s.started {
		s.mu.Unlock()
		s.Stats.Dropped.Add(1)
		s.m.hello("dropped")
		return
	}
	key := inflightKey(rec.PID, r.From.Addr())
	if s.inflight[key] {
		s.mu.Unlock()
		s.Stats.Duplicates.Add(1)
		s.m.hello("duplicate")
		return
	}
	conflict := s.perPID[rec.PID] > 0
	j := job{pid: pid, key: key, rec: rec.PID, addr: r.From.Addr(), pki: r.Version == hello.VersionPKI, adminSet: r.AdminSet}
	select {
	case s.queue <- j:
		s.hold(rec.PID, key)
		s.mu.Unlock()
		if conflict {
			// PIDs are public: any host can send one. The claim is
			// tried on its own; only the device with the PPS passes.
			s.Stats.Conflicts.Add(1)
			s.emit(event.HelloConflict, pid, "from", r.From.String(), "uuid", r.Message.UUID.String())
		}
		s.m.hello("accepted")
		s.emit(event.HelloReceived, pid, "from", r.From.String(), "retry", r.Message.Retry, "uuid", r.Message.UUID.String())
	default:
		s.mu.Unlock()
		s.Stats.Dropped.Add(1)
		s.m.hello("dropped")
		s.emit(event.HelloDropped, pid, "reason", "queue full")
	}
}

// refusePKI says why a PKI Hello is not for this SCS ("" when it is): no
// provisioning certificate, or none of the device's trusted root hashes is
// our root's.
func (s *Server) refusePKI(m hello.Message) string {
	if s.rootSHA1 == nil {
		return "a PKI Hello, and this SCS has no provisioning certificate (amtsim scs --pki)"
	}
	for _, h := range m.Hashes {
		if h.Type == hello.HashSHA1 && bytes.Equal(h.Hash, s.rootSHA1) || h.Type == hello.HashSHA256 && bytes.Equal(h.Hash, s.rootSHA256) {
			return ""
		}
	}
	return "the device trusts no root of this SCS's provisioning certificate"
}

func (s *Server) worker() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case j := <-s.queue:
			s.m.queue.Set(float64(len(s.queue)))
			s.session(j)
		}
	}
}

// session provisions one device (or settles one), and on failure
// schedules a retry.
func (s *Server) session(j job) {
	unlock := s.lockPID(j.rec)
	defer unlock()
	if j.settle {
		s.settle(j)
		return
	}
	start := time.Now()
	err := s.provision(j)
	if err == nil {
		s.mu.Lock()
		s.unholdLocked(j)
		s.latency = append(s.latency, time.Since(start))
		s.mu.Unlock()
		return
	}
	if s.ctx.Err() != nil {
		// The SCS is stopping: the session was cut, not failed. Its record
		// says where it stood, and the next start settles or resumes it.
		s.Stats.Aborted.Add(1)
		s.release(j)
		return
	}
	step, reason := failure(err)
	s.Stats.Failed.Add(1)
	s.m.session("failed", step)
	s.mu.Lock()
	if s.failures[step] == nil {
		s.failures[step] = map[string]int{}
	}
	s.failures[step][reason]++
	s.mu.Unlock()
	s.emit(event.SCSFailed, j.pid, "step", step, "reason", reason, "attempt", j.attempt+1, "err", err.Error())
	// Past the commit the device may hold the new pair and be provisioned:
	// it sends no more Hellos and refuses the old PSK, so the retry is a
	// login with the new credentials, not a new session.
	j.settle = (step == "commit" || step == "verify") && !errors.Is(err, errNotCommitted) && !j.pki && !s.o.Flaws.ForgetCommit
	s.retry(j)
}

// release ends j's hold on its device: a Hello from it is heard again.
func (s *Server) release(j job) {
	s.mu.Lock()
	s.unholdLocked(j)
	s.mu.Unlock()
}

// inflightKey names a job: the record and the address it goes to.
func inflightKey(recPID string, addr netip.Addr) string { return recPID + "@" + addr.String() }

// hold marks a job in flight (s.mu held).
func (s *Server) hold(recPID, key string) {
	s.inflight[key] = true
	s.perPID[recPID]++
}

// unholdLocked ends a job's hold (s.mu held).
func (s *Server) unholdLocked(j job) {
	if !s.inflight[j.key] {
		return
	}
	delete(s.inflight, j.key)
	if s.perPID[j.rec]--; s.perPID[j.rec] <= 0 {
		delete(s.perPID, j.rec)
	}
}

// pidLock serializes the sessions of one record: two candidates for a
// PID must not both write its record.
type pidLock struct {
	mu    sync.Mutex
	users int
}

// lockPID takes the record's lock, and returns what gives it back.
func (s *Server) lockPID(recPID string) func() {
	s.mu.Lock()
	l := s.pidLocks[recPID]
	if l == nil {
		l = &pidLock{}
		s.pidLocks[recPID] = l
	}
	l.users++
	s.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.users--; l.users == 0 {
			delete(s.pidLocks, recPID)
		}
		s.mu.Unlock()
	}
}

// retry queues j again after a backoff, or, with its attempts used up,
// lets the device go until its next Hello.
func (s *Server) retry(j job) {
	if s.ctx.Err() != nil || j.attempt+1 >= s.o.MaxAttempts {
		s.release(j)
		return
	}
	// Still in flight: the retry owns the device until it runs.
	wait := s.o.RetryBase << j.attempt
	j.attempt++
	time.AfterFunc(wait, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.started {
			return
		}
		select {
		case s.queue <- j:
		default:
			s.unholdLocked(j)
		}
	})
}

// failure names a failed session's step and a short reason, for counting.
func failure(err error) (string, string) {
	var se *StepError
	if !errors.As(err, &se) {
		return "session", short(err)
	}
	if se.Err == nil {
		return se.Step, se.Status.String()
	}
	var f *wsman.Fault
	if errors.As(se.Err, &f) {
		return se.Step, "fault " + f.Subcode
	}
	return se.Step, short(se.Err)
}

// short keeps the last part of an error chain, the cause, without
// addresses, so that like failures count together.
func short(err error) string {
	m := err.Error()
	if i := strings.LastIndex(m, ": "); i >= 0 {
		m = m[i+2:]
	}
	if len(m) > 60 {
		m = m[:60]
	}
	return m
}

// provision is one session with one device.
func (s *Server) provision(j job) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.o.SessionTimeout)
	defer cancel()
	rec, ok := s.o.DB.Get(j.pid)
	if !ok {
		return fmt.Errorf("PID %s left the database", j.pid)
	}
	curPID, curPPS := rec.PID, rec.PPS
	if j.pid == rec.NewPID && rec.NewPID != "" {
		// The device took the new pair but the SCS never learned it ended
		// well; it is in setup again (partially unprovisioned) or the
		// commit went through and the device is rebooting. Start from it.
		curPID, curPPS = rec.NewPID, rec.NewPPS
		rec.PID, rec.PPS, rec.NewPID, rec.NewPPS = rec.NewPID, rec.NewPPS, "", ""
	}
	draw := rec.NewPID == "" && !j.pki
	rec.Attempts++
	rec.Sessions++
	// The record's address is where settling finds the device: a claim
	// from a new address replaces it only once the device there has
	// proved itself (the login step).
	addr := j.addr.String()
	claimed := rec.Addr != "" && rec.Addr != addr
	if !claimed {
		rec.Addr = addr
	}
	// The new pair is on disk before the device hears it.
	if err := s.putNewPair(&rec, draw); err != nil {
		return &StepError{Step: "database", Err: err}
	}
	s.Stats.Sessions.Add(1)
	s.emit(event.SCSSession, curPID, "addr", addr, "attempt", j.attempt+1)

	password := rec.Password
	if password == "" {
		password = s.o.Password
	}
	target := Target{Addr: addr, Dial: s.o.Dial, PID: curPID, PPS: curPPS, Password: password, NoTLS: s.o.NoTLS, CallTimeout: s.o.CallTimeout,
		IgnoreReturnValues: s.o.Flaws.TrustAnswers, IgnoreStale: s.o.Flaws.IgnoreStale}
	if j.pki {
		// Remote configuration: the certificate proves the SCS, and a
		// device whose MEBx password is still the factory's takes the
		// admin with an empty one (docs/protocol.md §11).
		target.PKI, target.NoTLS = s.o.PKI, false
		if !j.adminSet {
			target.Password = ""
		}
	}
	p := s.o.Profile
	p.NewPID, p.NewPPS = rec.NewPID, rec.NewPPS
	if p.HostName == "" {
		// The name the database knows the device by (its DHCP host name
		// for a generated fleet); a device without one keeps its own.
		p.HostName = rec.Host
	}
	var serial string
	var notAfter time.Time
	if !s.o.NoTLS {
		p.Certify = func(pub *rsa.PublicKey, host, domain string) ([]byte, error) {
			if s.o.Profile.DomainName == "" && rec.Domain != domain {
				// The device's own domain (the profile names none): the
				// login that settles a lost commit needs it, so it is on
				// disk before the commit.
				rec.Domain = domain
				if err := s.o.DB.Put(rec); err != nil {
					return nil, err
				}
			}
			der, err := s.o.CA.Issue(pub, host, domain)
			if err == nil {
				if c, perr := x509.ParseCertificate(der); perr == nil {
					serial, notAfter = c.SerialNumber.Text(16), c.NotAfter
				}
			}
			return der, err
		}
	}
	start := time.Now()
	res, err := Provision(ctx, target, p, func(r StepResult) {
		s.m.step(r.Step, r.Duration)
		s.emit(event.SCSStep, curPID, "step", r.Step, "ms", float64(r.Duration.Microseconds())/1000, "ok", r.Err == nil)
		if r.Step == "login" && r.Err == nil && claimed {
			rec.Addr, claimed = addr, false
			_ = s.o.DB.Put(rec)
		}
	})
	if err != nil {
		var se *StepError
		if !errors.As(err, &se) || se.Step != "commit" || s.o.Flaws.ForgetCommit {
			rec.LastError = err.Error()
			_ = s.o.DB.Put(rec)
			return err
		}
		// The commit's answer was lost: whether it took, a login with the
		// new credentials tells.
	}
	if res == nil || res.Host == "" {
		res = &Result{Host: rec.Host, Domain: recordDomain(rec, p)}
	}
	if !s.o.NoVerify {
		// The commit answered (or its answer was lost): until the device
		// has re-armed its ports with the certificate, its old TLS-PSK
		// port may still answer with an alert, so alerts are retried.
		if _, verr := s.verify(ctx, target, res, p, false); verr != nil {
			if err == nil {
				err = &StepError{Step: "verify", Err: verr}
			}
			rec.LastError = err.Error()
			_ = s.o.DB.Put(rec)
			return err
		}
	} else if err != nil {
		return err
	}
	if rec.NewPID != "" {
		rec.PID, rec.PPS, rec.NewPID, rec.NewPPS = rec.NewPID, rec.NewPPS, "", ""
	}
	rec.State, rec.Provisioned, rec.LastError = StateProvisioned, time.Now(), ""
	rec.Host, rec.Domain = res.Host, res.Domain
	if p.NewMEBxPassword != "" {
		rec.Password = p.NewMEBxPassword // the MEBx password from now on
	}
	if serial != "" {
		rec.CertSerial, rec.CertNotAfter = serial, notAfter
	}
	if err := s.o.DB.Put(rec); err != nil {
		return &StepError{Step: "database", Err: err}
	}
	d := time.Since(start)
	s.Stats.Provisioned.Add(1)
	s.m.session("provisioned", "")
	s.m.total.Observe(d.Seconds())
	s.emit(event.SCSProvisioned, rec.PID, "old_pid", curPID, "addr", rec.Addr, "ms", float64(d.Microseconds())/1000, "cert_serial", serial)
	return nil
}

// maxDraws bounds the draws of a new PID: with 36^7 PIDs, even a database
// of a million records refuses one draw in 78,000.
const maxDraws = 8

// putNewPair stores rec, with a new PID/PPS drawn for it when draw is set.
// A new PID must be no other record's (DB.Put refuses one, ErrPIDInUse),
// not the device's own, and no factory PID of a generated fleet's seed
// (DB.FactoryPID: a device of a shard generated later would find this
// record under its PID). Drawn at random from 36^7, a 100,000-device
// fleet's draws meet a held PID in about one run in five (1e5 draws
// against some 1.5e5 held PIDs), and the device whose PID it was would
// then be offered the other device's PSK at every Hello.
func (s *Server) putNewPair(rec *Record, draw bool) error {
	if !draw {
		return s.o.DB.Put(*rec)
	}
	for range maxDraws {
		pid, pps, err := identity.NewPIDPPS(s.o.Rand)
		if err != nil {
			return err
		}
		if pid == rec.PID || s.o.DB.FactoryPID(pid) {
			s.Stats.Redrawn.Add(1)
			continue
		}
		rec.NewPID, rec.NewPPS = pid, pps
		err = s.o.DB.Put(*rec)
		if !errors.Is(err, ErrPIDInUse) {
			return err
		}
		s.Stats.Redrawn.Add(1)
	}
	return fmt.Errorf("no free PID in %d draws", maxDraws)
}

// recordDomain is the domain rec's certificate names: the one recorded
// at the certificate's issue, else the profile's.
func recordDomain(rec Record, p Profile) string {
	if rec.Domain != "" {
		return rec.Domain
	}
	return p.DomainName
}

// settle checks a record with a pending new pair: if the device answers
// the new credentials it committed, and the record says so. If it refuses
// them it is still in setup and will Hello again. If it does not answer,
// settle is tried again while attempts last: a device that committed sends
// no more Hellos.
func (s *Server) settle(j job) {
	rec, ok := s.o.DB.Get(j.pid)
	if !ok || rec.NewPID == "" {
		s.release(j)
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.o.VerifyWindow+5*time.Second)
	defer cancel()
	p := s.o.Profile
	domain := recordDomain(rec, p)
	t := Target{Addr: rec.Addr, Dial: s.o.Dial, PID: rec.NewPID, PPS: rec.NewPPS, NoTLS: s.o.NoTLS, CallTimeout: s.o.CallTimeout, IgnoreStale: s.o.Flaws.IgnoreStale}
	leaf, err := s.verify(ctx, t, &Result{Host: rec.Host, Domain: domain}, p, true)
	if err != nil {
		s.emit(event.SCSUnsettled, rec.PID, "attempt", j.attempt+1, "err", err.Error())
		if errors.Is(err, errNotCommitted) {
			s.release(j) // still in setup: its next Hello starts a session
			return
		}
		s.retry(j)
		return
	}
	defer s.release(j)
	oldPID := rec.PID
	if rec.NewPID != "" {
		rec.PID, rec.PPS, rec.NewPID, rec.NewPPS = rec.NewPID, rec.NewPPS, "", ""
	}
	rec.State, rec.Provisioned, rec.LastError = StateProvisioned, time.Now(), ""
	if p.NewMEBxPassword != "" {
		rec.Password = p.NewMEBxPassword
	}
	if leaf != nil {
		// The session that issued it never reached its end: the
		// certificate is the one the device now serves, which verify
		// checked is of our CA and names the device.
		rec.CertSerial, rec.CertNotAfter = leaf.SerialNumber.Text(16), leaf.NotAfter
	}
	if err := s.o.DB.Put(rec); err != nil {
		return
	}
	s.Stats.Provisioned.Add(1)
	s.m.session("provisioned", "")
	s.emit(event.SCSProvisioned, rec.PID, "old_pid", oldPID, "addr", rec.Addr, "settled", true, "cert_serial", rec.CertSerial)
}

// verify logs in with the new credentials: over the issued certificate on
// 16993, or Digest on 16992 without TLS. The device re-arms its ports just
// after the commit, so a refused or reset connection is tried again, with
// a growing pause, for VerifyWindow. A Digest 401 ends it at once; so does
// a TLS alert or a certificate not of our CA when alertIsFinal (settling,
// long after any commit, when either means the device is still in setup:
// it never committed). Over TLS it returns the certificate the device
// served.
func (s *Server) verify(ctx context.Context, t Target, res *Result, p Profile, alertIsFinal bool) (*x509.Certificate, error) {
	var last error
	end := time.Now().Add(s.o.VerifyWindow)
	for pause := time.Duration(0); ; pause = min(max(2*pause, 50*time.Millisecond), time.Second) {
		if pause > 0 {
			if time.Now().Add(pause).After(end) {
				return nil, last
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(pause):
			}
		}
		var sess *Session
		var leaf *x509.Certificate
		if s.o.NoTLS {
			t.Password = p.AdminPassword
			sess = OpenSetup(t)
			sess.Digest.Username = p.AdminUser
		} else {
			name := res.Host
			if res.Domain != "" {
				name += "." + res.Domain
			}
			sess = OpenOperational(t, s.o.CA.Pool(), name, p.AdminUser, p.AdminPassword)
			// Runs after the chain and name are verified.
			sess.tlsConf.VerifyConnection = func(cs tls.ConnectionState) error {
				leaf = cs.PeerCertificates[0]
				return nil
			}
		}
		sc, err := sess.WSMAN.Get(ctx, wsman.SetupAndConfigurationService, nil)
		sess.Close()
		if err == nil {
			if st, _ := sc.Get("ProvisioningState"); st != "2" {
				return nil, fmt.Errorf("%w: ProvisioningState %s", errNotCommitted, st)
			}
			return leaf, nil
		}
		last = err
		// The device answered, and not as a provisioned one: no point
		// trying again.
		// So has a device that shows a certificate our CA did not issue: a
		// device in setup serves its own for remote configuration.
		var op *net.OpError
		var cv *tls.CertificateVerificationError
		if strings.Contains(err.Error(), "401") || alertIsFinal && (errors.As(err, &op) && op.Op == "remote error" || errors.As(err, &cv)) {
			return nil, fmt.Errorf("%w: %w", errNotCommitted, err)
		}
	}
}

// errNotCommitted: the device answers, but not with the new credentials
// (a Digest 401, or a TLS alert from a device still on TLS-PSK): it has
// not committed, or has left provisioning again.
var errNotCommitted = errors.New("the device does not take the new credentials")

// Failures counts failed sessions by step and reason.
func (s *Server) Failures() map[string]map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]map[string]int, len(s.failures))
	for step, m := range s.failures {
		out[step] = make(map[string]int, len(m))
		for r, n := range m {
			out[step][r] = n
		}
	}
	return out
}

// Latencies are the durations of successful sessions, sorted.
func (s *Server) Latencies() []time.Duration {
	s.mu.Lock()
	out := append([]time.Duration(nil), s.latency...)
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
