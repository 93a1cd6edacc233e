package scs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/atomicfile"
)

// Record states.
const (
	StateNew         = "new"         // known; not provisioned yet
	StateProvisioned = "provisioned" // committed and verified
)

// Record is what the SCS knows of one device. NewPID/NewPPS are written
// before the device is told them and kept until the SCS knows which pair
// the device holds: a session cut right after CommitChanges leaves that
// unknown, and the device's next Hello (or a verifying login) settles it.
type Record struct {
	PID      string `json:"pid"`
	PPS      string `json:"pps"`
	Password string `json:"mebx_password,omitempty"` // the MEBx password the device was readied with; "" = the profile's
	Host     string `json:"host,omitempty"`
	// Domain is the device's domain as its certificate names it
	// (host.domain), kept for the verifying login.
	Domain string `json:"domain,omitempty"`
	UUID   string `json:"uuid,omitempty"`

	NewPID string `json:"new_pid,omitempty"`
	NewPPS string `json:"new_pps,omitempty"`

	State        string    `json:"state"`
	Attempts     int       `json:"attempts,omitempty"`
	Sessions     int       `json:"sessions,omitempty"`
	Provisioned  time.Time `json:"provisioned,omitzero"`
	CertSerial   string    `json:"cert_serial,omitempty"`
	CertNotAfter time.Time `json:"cert_not_after,omitzero"`
	Addr         string    `json:"addr,omitempty"`
	LastError    string    `json:"last_error,omitempty"`
}

// DB is the SCS's PID → PPS database: a journal file of JSON records, one
// per line, the last line for a PID winning. Writes are group-committed:
// Put returns once its line is on disk (fsync), and many concurrent Puts
// share one fsync. Opening a database compacts the journal (one line per
// record, written to a temp file, fsynced and renamed over it); a torn last
// line, from a crash mid-write, is dropped.
type DB struct {
	path string

	mu      sync.Mutex
	recs    map[string]*Record // by PID and by NewPID
	byUUID  map[string]*Record // by UUID (upper case), for PKI Hellos, which carry no PID
	f       *os.File
	pending []byte
	waiters []chan error
	writing bool
	closed  bool
	// groupWait, overlap and busy gather writes into one fsync (flush).
	groupWait time.Duration
	overlap   bool
	busy      func() bool // nil: always
	syncs     int64       // fsyncs of the journal since open
	synced    int64       // records those fsyncs made durable
	// lines is how many lines the journal holds (one per record after
	// compaction, one more per write since).
	lines int
	// size is where the last whole record ends: a write that fails is cut
	// back to it, so that no partial line stays for later appends to land
	// on.
	size      int64
	lock      *os.File // flock'd for the database's owner
	torn      int
	temporary bool
	// seeds are the identity seeds Generate has added devices under in
	// this process (FactoryPID).
	seeds []uint64
}

// ErrDBLocked: another process has the database open.
var ErrDBLocked = errors.New("scs: database in use")

// ErrCorruptDB wraps what cannot be read back from a database file.
var ErrCorruptDB = errors.New("scs: corrupt database")

// ErrPIDInUse is a Put whose PID or new PID is another record's. The
// index has one record per PID: taking it over would hide the other
// record (its device's Hellos would find this one, and fail on a PSK the
// device never had) and drop it at the next compaction.
var ErrPIDInUse = errors.New("scs: PID in use by another record")

// ErrFactoryPIDHeld is Generated.ClashErr's: a device of the fleet has a
// factory PID that another device's record holds.
var ErrFactoryPIDHeld = errors.New("scs: factory PID held by another device's record")

// DBOptions tune how a database writes.
type DBOptions struct {
	// GroupWait is how long a write waits for others to share its fsync,
	// once writes have been seen to arrive while another was being
	// synced (zero: DefaultGroupWait; negative: never wait).
	GroupWait time.Duration
}

// DefaultGroupWait is DBOptions.GroupWait's default. An SCS provisioning
// a fleet writes each device's record twice (the new PID/PPS before the
// device is told them, the state after the check), a few hundred writes
// a second spread out in time, so without a wait almost every write had
// an fsync of its own: 1,924 fsyncs for 1,000 provisionings (strace), at
// about 95 µs of the process's CPU each (BenchmarkFleetProvisioning's
// profile at 10k: 183 µs per provisioning). A write that waits adds this
// to its own latency: at a steady 200 provisionings a second, with CPU to
// spare, boot → provisioned p50 went from 4.7–5.0 to 9.3–9.4 ms, which
// is why the SCS has it wait only while it is behind (GatherWhile).
const DefaultGroupWait = 5 * time.Millisecond

// OpenDB is OpenDBWith with the default options.
func OpenDB(path string) (*DB, error) { return OpenDBWith(path, DBOptions{}) }

// OpenDBWith opens (or creates) the database at path, for this process
// alone: a second opener, in this process or another, gets ErrDBLocked
// (two owners compacting one journal lose each other's writes). Torn
// records, from a crash or a full disk in mid-write, are dropped and
// counted (Torn); a record appended onto a torn one is kept.
func OpenDBWith(path string, o DBOptions) (*DB, error) {
	if o.GroupWait == 0 {
		o.GroupWait = DefaultGroupWait
	}
	lock, err := lockDB(path)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	db := &DB{path: path, recs: map[string]*Record{}, byUUID: map[string]*Record{}, lock: lock, groupWait: o.GroupWait}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("scs: open database: %w", err)
	}
	lines := bytes.Split(b, []byte("\n"))
	for i, line := range lines {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		r, torn, err := parseLine(line)
		if err != nil {
			if i == len(lines)-1 {
				db.torn++ // a torn last line: the write it belonged to never returned
				break
			}
			return nil, fmt.Errorf("%w: %s line %d: %v", ErrCorruptDB, path, i+1, err)
		}
		db.torn += torn
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("%w: %s line %d: %v", ErrCorruptDB, path, i+1, err)
		}
		db.index(r)
	}
	if err := db.compact(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("scs: open database: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("scs: open database: %w", err)
	}
	db.f, db.size = f, st.Size()
	ok = true
	return db, nil
}

// Temporary marks a database whose file is gone (its directory removed
// while open): Close does not compact it.
func (db *DB) Temporary() {
	db.mu.Lock()
	db.temporary = true
	db.mu.Unlock()
}

// Torn counts the torn records OpenDB dropped.
func (db *DB) Torn() int { return db.torn }

// lockDB takes the database's lock file, beside it: the journal itself is
// replaced at each compaction, so a lock on it would not hold.
func lockDB(path string) (*os.File, error) {
	lp := path + ".lock"
	f, err := os.OpenFile(lp, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("scs: open database: lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(lp)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			who := ""
			if o := strings.TrimSpace(string(owner)); o != "" {
				who = " (process " + o + ")"
			}
			return nil, fmt.Errorf("%w: %s is open in another amtsim scs%s; one database has one owner", ErrDBLocked, path, who)
		}
		return nil, fmt.Errorf("scs: open database: lock %s: %w", lp, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

// parseLine reads one journal line. A line that is not one record may be
// a torn record with a whole one appended onto it (a full disk's short
// write, from before writes were cut back): the whole one is kept and the
// torn part counted.
func parseLine(line []byte) (*Record, int, error) {
	var r Record
	err := json.Unmarshal(line, &r)
	if err == nil {
		return &r, 0, nil
	}
	if i := bytes.LastIndex(line, []byte(`{"pid":`)); i > 0 {
		var rest Record
		if json.Unmarshal(line[i:], &rest) == nil {
			return &rest, 1, nil
		}
	}
	return nil, 0, err
}

func (r *Record) check() error {
	if _, err := identity.NormalizePID(r.PID); err != nil {
		return fmt.Errorf("pid %q: %w", r.PID, err)
	}
	if _, err := identity.NormalizePPS(r.PPS); err != nil {
		return fmt.Errorf("pps of %s: %w", r.PID, err)
	}
	if (r.NewPID == "") != (r.NewPPS == "") {
		return fmt.Errorf("new_pid and new_pps of %s go together", r.PID)
	}
	return nil
}

// index makes r the record for its PID and NewPID, dropping index entries
// of an older version of the same record.
func (db *DB) index(r *Record) {
	for _, k := range []string{r.PID, r.NewPID} {
		if old, ok := db.recs[k]; ok && k != "" {
			delete(db.recs, old.PID)
			if old.NewPID != "" {
				delete(db.recs, old.NewPID)
			}
			if u := strings.ToUpper(old.UUID); db.byUUID[u] == old {
				delete(db.byUUID, u)
			}
		}
	}
	if r.UUID != "" {
		db.byUUID[strings.ToUpper(r.UUID)] = r
	}
	db.recs[r.PID] = r
	if r.NewPID != "" {
		db.recs[r.NewPID] = r
	}
}

// Pending returns a copy of every record with a pending new pair: one
// pass over the index, copying only those (All copies and sorts them
// all).
func (db *DB) Pending() []Record {
	db.mu.Lock()
	defer db.mu.Unlock()
	var out []Record
	for k, r := range db.recs {
		if r.NewPID != "" && k == r.PID {
			out = append(out, *r)
		}
	}
	return out
}

// All returns a copy of every record, by PID.
func (db *DB) All() []Record {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.allLocked()
}

func (db *DB) allLocked() []Record {
	seen := map[*Record]bool{}
	var out []Record
	for _, r := range db.recs {
		if !seen[r] {
			seen[r] = true
			out = append(out, *r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

// compact rewrites the file with one line per record: temp file, fsync,
// rename, directory fsync.
func (db *DB) compact() error {
	var buf bytes.Buffer
	all := db.allLocked()
	for _, r := range all {
		line, err := json.Marshal(r)
		if err != nil {
			return err
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	if err := atomicfile.Write(db.path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("scs: compact database: %w", err)
	}
	db.lines = len(all)
	return nil
}

// stale reports whether most of the journal's lines are superseded ones,
// so that compacting is worth its rewrite.
func (db *DB) stale() bool {
	seen := make(map[*Record]struct{}, len(db.recs))
	for _, r := range db.recs {
		seen[r] = struct{}{}
	}
	return db.lines > 2*len(seen)
}

// Get returns the record whose PID or NewPID is pid.
func (db *DB) Get(pid string) (Record, bool) {
	db.mu.Lock()
	defer db.mu.Unlock()
	r, ok := db.recs[pid]
	if !ok {
		return Record{}, false
	}
	return *r, true
}

// ByUUID finds a record by the device's UUID (any case).
func (db *DB) ByUUID(uuid string) (Record, bool) {
	db.mu.Lock()
	defer db.mu.Unlock()
	r, ok := db.byUUID[strings.ToUpper(uuid)]
	if !ok {
		return Record{}, false
	}
	return *r, true
}

// Put stores r (replacing the record for r.PID, or for r's old PID when
// r.PID was its NewPID) and returns once it is on disk.
func (db *DB) Put(r Record) error { return db.putAll([]Record{r}) }

// putAll stores records with one write and one fsync (group commit with
// any Put under way), and returns once they are on disk.
func (db *DB) putAll(rs []Record) error {
	if len(rs) == 0 {
		return nil
	}
	var lines []byte
	for i := range rs {
		if err := rs[i].check(); err != nil {
			return err
		}
		line, err := json.Marshal(rs[i])
		if err != nil {
			return err
		}
		lines = append(append(lines, line...), '\n')
	}
	done := make(chan error, 1)
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return errors.New("scs: database closed")
	}
	for i := range rs {
		if err := db.conflictLocked(&rs[i]); err != nil {
			db.mu.Unlock()
			return err
		}
	}
	// What the records replace, to put back if the write fails: memory
	// says what the disk does.
	prev := make([]*Record, len(rs))
	mine := make([]*Record, len(rs))
	for i, r := range rs {
		prev[i] = db.recs[r.PID]
		c := r
		mine[i] = &c
		db.index(&c)
	}
	db.pending = append(db.pending, lines...)
	db.lines += len(rs)
	db.waiters = append(db.waiters, done)
	if db.writing {
		db.overlap = true // another write is being synced: writes overlap
	} else {
		db.writing = true
		go db.flush()
	}
	db.mu.Unlock()
	err := <-done
	if err != nil {
		db.mu.Lock()
		for i := len(rs) - 1; i >= 0; i-- {
			if db.recs[rs[i].PID] != mine[i] {
				continue // a later write has it
			}
			db.unindex(mine[i])
			if prev[i] != nil {
				db.index(prev[i])
			}
		}
		db.mu.Unlock()
	}
	return err
}

// conflictLocked refuses r (ErrPIDInUse) when its PID or new PID is held
// by a record that is not an earlier version of r: one with another PID,
// unless r has adopted that record's new PID, and never one of another
// UUID.
func (db *DB) conflictLocked(r *Record) error {
	for _, k := range []string{r.PID, r.NewPID} {
		o, ok := db.recs[k]
		if !ok || k == "" {
			continue
		}
		same := o.PID == r.PID || o.NewPID != "" && o.NewPID == r.PID
		if o.UUID != "" && r.UUID != "" && !strings.EqualFold(o.UUID, r.UUID) {
			same = false
		}
		if !same {
			return fmt.Errorf("%w: %s is held by the record of %s", ErrPIDInUse, k, o.PID)
		}
	}
	return nil
}

// unindex drops r's index entries.
func (db *DB) unindex(r *Record) {
	for _, k := range []string{r.PID, r.NewPID} {
		if k != "" && db.recs[k] == r {
			delete(db.recs, k)
		}
	}
	if u := strings.ToUpper(r.UUID); r.UUID != "" && db.byUUID[u] == r {
		delete(db.byUUID, u)
	}
}

// GatherWhile makes the wait for other writes (DBOptions.GroupWait)
// conditional: a batch waits only while busy says so. busy is called with
// the database's lock held.
func (db *DB) GatherWhile(busy func() bool) {
	db.mu.Lock()
	db.busy = busy
	db.mu.Unlock()
}

// flush writes what is pending, fsyncs, and answers the waiters; it loops
// while more arrived meanwhile (group commit). Once a write has arrived
// while another was being synced, the next batch first waits groupWait
// for more to join it (while busy, if set), and the batch after only if
// one did: writes from one goroutine after another never overlap, so they
// never wait.
func (db *DB) flush() {
	db.mu.Lock()
	for len(db.pending) > 0 {
		if db.overlap && db.groupWait > 0 && !db.closed && (db.busy == nil || db.busy()) {
			db.overlap = false
			db.mu.Unlock()
			time.Sleep(db.groupWait)
			db.mu.Lock()
		}
		buf, waiters := db.pending, db.waiters
		db.pending, db.waiters = nil, nil
		f := db.f
		db.mu.Unlock()
		_, err := f.Write(buf)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			// Cut back to the last whole record: a short write's partial
			// line would take the next append with it.
			if terr := f.Truncate(db.size); terr != nil {
				err = fmt.Errorf("%w (and cutting it back: %v)", err, terr)
			}
			err = fmt.Errorf("scs: database write: %w", err)
		}
		db.mu.Lock()
		db.syncs++
		if err == nil {
			db.size += int64(len(buf))
			db.synced += int64(len(waiters))
		}
		// Answered under the lock, so that a writer's next write, which
		// waits for this answer, finds this flush done or gone and does
		// not count as overlapping it.
		for _, w := range waiters {
			w <- err
		}
	}
	db.writing = false
	db.mu.Unlock()
}

// DBStats counts a database's writes since it opened.
type DBStats struct {
	Syncs  int64 // fsyncs of the journal
	Writes int64 // writes (Put, or a batch of generated records) they made durable
}

// Stats returns the counts so far.
func (db *DB) Stats() DBStats {
	db.mu.Lock()
	defer db.mu.Unlock()
	return DBStats{Syncs: db.syncs, Writes: db.synced}
}

// Close waits for pending writes and compacts the journal when most of
// its lines are superseded (every line is on disk already: compacting
// only makes the next open quicker).
func (db *DB) Close() error {
	for {
		db.mu.Lock()
		if !db.writing {
			break
		}
		db.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	defer db.mu.Unlock()
	if db.closed {
		return nil
	}
	db.closed = true
	err := db.f.Close()
	defer db.lock.Close()
	if db.stale() && !db.temporary {
		if cerr := db.compact(); err == nil {
			err = cerr
		}
	}
	return err
}

// RecordBytes is what one record costs the SCS in memory: 402 bytes of
// live heap per generated record (measured over 100,000), times the room
// GOGC=400 (internal/gcpolicy) lets the heap grow to.
const RecordBytes = 2 << 10

// MaxRecords is about how many records fit in memory bytes, under the
// garbage collector's soft limit of three quarters of it.
func MaxRecords(memory int64) int { return int(memory / 4 * 3 / RecordBytes) }

// generateBatch is how many generated records go to disk in one write
// and fsync: a 100,000-device fleet is 13 writes, not 100,000.
const generateBatch = 8192

// FactoryPID says whether pid is the factory PID of a device, in any
// shard, under a seed Generate has added devices under: such a PID is
// that device's, whether the database holds it yet or a later Generate
// adds it, and a new PID the SCS draws must stay off it.
func (db *DB) FactoryPID(pid string) bool {
	db.mu.Lock()
	seeds := db.seeds
	db.mu.Unlock()
	for _, seed := range seeds {
		if _, _, ok := identity.FactoryDevice(seed, pid); ok {
			return true
		}
	}
	return false
}

// holding is what the database has for a device Generate would add.
type holding int

const (
	heldNot     holding = iota
	heldAlready         // its record, under its factory PID or its UUID
	heldByOther         // no record of its own, and its factory PID is another device's
)

// holds says what the database has for the device id: its record, under
// its factory PID or its UUID, or under its factory PID the record of
// another device (a UUID that is not id's), which an SCS before the
// factory-PID check (FactoryPID) could give a PID that was some device's.
func (db *DB) holds(id identity.Identity) holding {
	db.mu.Lock()
	defer db.mu.Unlock()
	if _, ok := db.byUUID[strings.ToUpper(id.UUID.String())]; ok {
		return heldAlready
	}
	r, ok := db.recs[id.PID]
	switch {
	case !ok:
		return heldNot
	case r.UUID != "" && !strings.EqualFold(r.UUID, id.UUID.String()):
		return heldByOther
	}
	return heldAlready
}

// Generated is what Generate did.
type Generated struct {
	Added, Held int // records added; devices the database held already
	// Clashes are the devices left out because another device's record
	// holds their factory PID, as its PID or its pending new PID: given
	// out by an SCS before it kept new PIDs off factory PIDs. Such a
	// device's Hellos would find that record, so it cannot be provisioned
	// until that record's device is provisioned again (and moves off the
	// PID) or the record is removed.
	Clashes []Clash
}

// Clash names a device Generate left out, and the record that holds its
// factory PID. It carries no secret (neither record's PPS), so that it
// can be logged as it is.
type Clash struct {
	Shard, Index    int
	Host, UUID, PID string // the device's, PID its factory PID
	// The record that holds the PID.
	HolderUUID, HolderHost, HolderState string
}

func (c Clash) String() string {
	return fmt.Sprintf("%s (shard %d, index %d, UUID %s): factory PID %s is held by the %s record of UUID %s (host %q)",
		c.Host, c.Shard, c.Index, c.UUID, c.PID, c.HolderState, c.HolderUUID, c.HolderHost)
}

// ClashErr is nil when Generate left no device out, and otherwise an
// error that counts the devices left out and names the first few.
func (g Generated) ClashErr() error {
	if len(g.Clashes) == 0 {
		return nil
	}
	const named = 5
	var b strings.Builder
	for i, c := range g.Clashes[:min(named, len(g.Clashes))] {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(c.String())
	}
	if len(g.Clashes) > named {
		fmt.Fprintf(&b, "; and %d more", len(g.Clashes)-named)
	}
	return fmt.Errorf("%w: %d device(s) left out, since their factory PID is another device's PID, given out before new PIDs were kept off factory PIDs: %s",
		ErrFactoryPIDHeld, len(g.Clashes), b.String())
}

// Generate adds the records of a fleet: devices 0..count-1 of each of the
// shards under seed (identity.Of), readied with password ("" = the
// profile's). A device the database already holds, by its factory PID or
// by its UUID (a provisioned record has the PID the SCS gave it), is left
// as it is: an SCS that generates its fleet at every start, as the
// Kubernetes overlay's does, must not add provisioned devices again as
// new ones under their factory PID. A device whose factory PID another
// device's record holds is left out and named in Generated.Clashes.
// progress, if not nil, hears the records done so far after each batch.
// When ctx ends, Generate returns its error with every batch before it on
// disk.
func (db *DB) Generate(ctx context.Context, seed uint64, shards []int, count int, password string, progress func(done, total int)) (Generated, error) {
	db.mu.Lock()
	if !slices.Contains(db.seeds, seed) {
		db.seeds = append(db.seeds, seed)
	}
	db.mu.Unlock()
	var g Generated
	total, done := len(shards)*count, 0
	batch := make([]Record, 0, min(generateBatch, total))
	put := func() error {
		if err := db.putAll(batch); err != nil {
			return err
		}
		g.Added += len(batch)
		batch = batch[:0]
		if progress != nil {
			progress(done, total)
		}
		return nil
	}
	for _, shard := range shards {
		for i := range count {
			if i%1024 == 0 && ctx.Err() != nil {
				return g, ctx.Err()
			}
			id, err := identity.Of(seed, shard, i)
			if err != nil {
				return g, err
			}
			done++
			switch db.holds(id) {
			case heldNot:
				batch = append(batch, Record{PID: id.PID, PPS: id.PPS, Password: password, Host: id.HostName, UUID: id.UUID.String(), State: StateNew})
			case heldAlready:
				g.Held++
			case heldByOther:
				h, _ := db.Get(id.PID)
				g.Clashes = append(g.Clashes, Clash{Shard: shard, Index: i, Host: id.HostName, UUID: id.UUID.String(), PID: id.PID,
					HolderUUID: h.UUID, HolderHost: h.Host, HolderState: h.State})
			}
			if len(batch) == generateBatch {
				if err := put(); err != nil {
					return g, err
				}
			}
		}
	}
	if len(batch) > 0 || progress != nil {
		return g, put()
	}
	return g, nil
}

// ImportOptions adjust ImportCSV.
type ImportOptions struct {
	// Replace lets a line change the record of a PID the database holds:
	// its PPS, password and host (its UUID, state and any pending new
	// pair are kept). Without it such a line fails the import.
	Replace bool
}

// ImportCSV adds PID,PPS[,MEBx password[,host]] lines (a header line
// "pid,…" is skipped). It is all or nothing: every line is read and
// checked first, and the records go to disk in one write, or none do.
func (db *DB) ImportCSV(r io.Reader, o ImportOptions) (int, error) {
	cr := csv.NewReader(bufio.NewReader(r))
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	var recs []Record
	seen := map[string]int{}
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("scs: import line %d: %w (nothing imported)", line, err)
		}
		if line == 1 && len(rec) > 0 && strings.EqualFold(strings.TrimSpace(rec[0]), "pid") {
			continue
		}
		if len(rec) < 2 {
			return 0, fmt.Errorf("scs: import line %d: want PID,PPS[,password[,host]] (nothing imported)", line)
		}
		pid, err := identity.NormalizePID(rec[0])
		if err != nil {
			return 0, fmt.Errorf("scs: import line %d: %w (nothing imported)", line, err)
		}
		pps, err := identity.NormalizePPS(rec[1])
		if err != nil {
			return 0, fmt.Errorf("scs: import line %d: %w (nothing imported)", line, err)
		}
		if at, dup := seen[pid]; dup {
			return 0, fmt.Errorf("scs: import line %d: PID %s is on line %d too (nothing imported)", line, pid, at)
		}
		seen[pid] = line
		n := Record{PID: pid, PPS: pps, State: StateNew}
		if len(rec) > 2 {
			n.Password = rec[2]
		}
		if len(rec) > 3 {
			n.Host = rec[3]
		}
		if old, ok := db.Get(pid); ok {
			if old.PID != pid {
				return 0, fmt.Errorf("scs: import line %d: PID %s is the pending new PID of %s (nothing imported)", line, pid, old.PID)
			}
			if !o.Replace {
				return 0, fmt.Errorf("scs: import line %d: PID %s is in the database already; --import-replace changes it (nothing imported)", line, pid)
			}
			// What the line says replaces what it names; the rest of the
			// record (UUID, state, a pending new pair) stays.
			old.PPS, old.Password, old.Host = n.PPS, n.Password, n.Host
			n = old
		}
		recs = append(recs, n)
	}
	if err := db.putAll(recs); err != nil {
		return 0, fmt.Errorf("%w (nothing imported)", err)
	}
	return len(recs), nil
}
