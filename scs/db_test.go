package scs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/identity"
)

func TestDBPutGetReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scs.db")
	db, err := OpenDB(path)
	require.NoError(t, err)
	generate(t, db, 7, []int{0, 1}, 50, "Ready-Pass1!")
	assert.Len(t, db.All(), 100)
	id, _ := identity.Of(7, 1, 3)
	r, ok := db.Get(id.PID)
	require.True(t, ok)
	assert.Equal(t, id.PPS, r.PPS)
	assert.Equal(t, StateNew, r.State)

	// New credentials before the commit: both PIDs find the record.
	r.NewPID, r.NewPPS, _ = identity.NewPIDPPS(bytes.NewReader(bytes.Repeat([]byte{9}, 64)))
	require.NoError(t, db.Put(r))
	byNew, ok := db.Get(r.NewPID)
	require.True(t, ok)
	assert.Equal(t, id.PID, byNew.PID)
	// Provisioned: the new pair becomes the record's; the old PID is gone.
	done := byNew
	done.PID, done.PPS, done.NewPID, done.NewPPS, done.State = byNew.NewPID, byNew.NewPPS, "", "", StateProvisioned
	require.NoError(t, db.Put(done))
	_, ok = db.Get(id.PID)
	assert.False(t, ok)
	assert.Len(t, db.All(), 100)
	require.NoError(t, db.Close())

	db, err = OpenDB(path)
	require.NoError(t, err)
	defer db.Close()
	got, ok := db.Get(done.PID)
	require.True(t, ok)
	assert.Equal(t, StateProvisioned, got.State)
	assert.Len(t, db.All(), 100)
	// Generated again at a restart: the provisioned device is known by
	// its UUID and not added back under its factory PID.
	g := generate(t, db, 7, []int{0, 1}, 50, "Ready-Pass1!")
	assert.Equal(t, Generated{Held: 100}, g)
	assert.Len(t, db.All(), 100)
	_, ok = db.Get(id.PID)
	assert.False(t, ok, "the factory PID stays retired")
	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "the database holds secrets")
}

// Many sessions write at once; every write is on disk when Put returns,
// as the journal read back shows without a Close.
func TestDBGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scs.db")
	db, err := OpenDB(path)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, _ := identity.Of(8, 0, i)
			assert.NoError(t, db.Put(Record{PID: id.PID, PPS: id.PPS, State: StateNew}))
		}()
	}
	wg.Wait()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, 200, strings.Count(string(b), "\n"))
	require.NoError(t, db.Close())
}

// Sessions write a record now and then, not all at once (a fleet's
// sessions, two writes each, hundreds a second): once writes overlap, a
// batch waits GroupWait for others, so that they share an fsync. Each Put
// still returns with its record on disk.
func TestDBGroupsSpreadWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scs.db")
	db, err := OpenDB(path)
	require.NoError(t, err)
	st := spreadWrites(t, db, path, 9)
	assert.Equal(t, int64(8*60), st.Writes)
	assert.Less(t, st.Syncs, st.Writes/5, "spread writes should share fsyncs: %+v", st)
	require.NoError(t, db.Close())

	// Unless the SCS is not behind: then a write's latency counts, and
	// with a GroupWait of an hour a write that waited would not finish.
	path = filepath.Join(t.TempDir(), "scs.db")
	db, err = OpenDBWith(path, DBOptions{GroupWait: time.Hour})
	require.NoError(t, err)
	db.GatherWhile(func() bool { return false })
	finishes(t, db, "writes waited for each other while the SCS was not behind", func() { st = spreadWrites(t, db, path, 10) })
	assert.Equal(t, int64(8*60), st.Writes)
	require.NoError(t, db.Close())
}

// finishes runs f and fails the test, saying why, if f is not done within
// a minute: with a GroupWait of an hour, a write that waited is not.
func finishes(t *testing.T, db *DB, why string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s: %+v", why, db.Stats())
	}
}

// spreadWrites has 8 writers put 60 records each, a millisecond apart,
// and checks that each Put returns with its record in the file.
func spreadWrites(t *testing.T, db *DB, path string, seed uint64) DBStats {
	const writers, each = 8, 60
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id, _ := identity.Of(seed, 0, w*each+i)
				assert.NoError(t, db.Put(Record{PID: id.PID, PPS: id.PPS, State: StateNew}))
				b, err := os.ReadFile(path)
				if assert.NoError(t, err) {
					assert.Contains(t, string(b), `"pid":"`+id.PID+`"`, "Put returned before its record was written")
				}
				time.Sleep(time.Millisecond) // a session's other work
			}
		}()
	}
	wg.Wait()
	return db.Stats()
}

// One writer after another never overlaps, so it never waits: with a
// GroupWait of an hour, a write that waited would not finish.
func TestDBSequentialWritesDoNotWait(t *testing.T) {
	db, err := OpenDBWith(filepath.Join(t.TempDir(), "scs.db"), DBOptions{GroupWait: time.Hour})
	require.NoError(t, err)
	finishes(t, db, "sequential writes waited to be grouped", func() {
		for i := range 300 {
			id, _ := identity.Of(10, 0, i)
			if !assert.NoError(t, db.Put(Record{PID: id.PID, PPS: id.PPS, State: StateNew})) {
				return
			}
		}
	})
	assert.Equal(t, DBStats{Syncs: 300, Writes: 300}, db.Stats())
	require.NoError(t, db.Close())
}

// A crash mid-write leaves a torn last line: it is dropped. A bad line in
// the middle is corruption and says where.
func TestDBTornAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	id, _ := identity.Of(9, 0, 0)
	good := fmt.Sprintf(`{"pid":%q,"pps":%q,"state":"new"}`, id.PID, id.PPS)
	torn := filepath.Join(dir, "torn.db")
	require.NoError(t, os.WriteFile(torn, []byte(good+"\n"+`{"pid":"00`), 0o600))
	db, err := OpenDB(torn)
	require.NoError(t, err)
	assert.Len(t, db.All(), 1)
	require.NoError(t, db.Close())

	bad := filepath.Join(dir, "bad.db")
	require.NoError(t, os.WriteFile(bad, []byte(`{"pid":"nope"}`+"\n"+good+"\n"), 0o600))
	_, err = OpenDB(bad)
	assert.ErrorIs(t, err, ErrCorruptDB)
	assert.ErrorContains(t, err, "line 1")
}

func TestImportCSV(t *testing.T) {
	db, err := OpenDB(filepath.Join(t.TempDir(), "scs.db"))
	require.NoError(t, err)
	defer db.Close()
	n, err := db.ImportCSV(strings.NewReader("pid,pps,password\n0000-037M,NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ,Some-Pass1!\n"), ImportOptions{})
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	r, ok := db.Get("0000037M")
	require.True(t, ok)
	assert.Equal(t, "NKLDG5DCRRNQE9YZZIJL7LFLVJED69XJ", r.PPS)
	assert.Equal(t, "Some-Pass1!", r.Password)
	_, err = db.ImportCSV(strings.NewReader("0000-037X,NKLD\n"), ImportOptions{})
	assert.ErrorContains(t, err, "line 1")
}

func FuzzOpenDB(f *testing.F) {
	id, _ := identity.Of(9, 0, 0)
	f.Add([]byte(fmt.Sprintf(`{"pid":%q,"pps":%q,"state":"new"}`+"\n", id.PID, id.PPS)))
	f.Add([]byte("{\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "f.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := OpenDB(path)
		if err != nil {
			return
		}
		n := len(db.All())
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		again, err := OpenDB(path)
		if err != nil {
			t.Fatalf("a compacted database does not reopen: %v", err)
		}
		defer again.Close()
		if len(again.All()) != n {
			t.Fatalf("%d records, then %d", n, len(again.All()))
		}
	})
}

func FuzzImportCSV(f *testing.F) {
	f.Add("pid,pps\n0000-037M,NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ\n")
	f.Add("\"a\nb\",c")
	f.Fuzz(func(t *testing.T, s string) {
		db, err := OpenDB(filepath.Join(t.TempDir(), "f.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		n, _ := db.ImportCSV(strings.NewReader(s), ImportOptions{})
		if len(db.All()) > n {
			t.Fatalf("%d records from %d imported lines", len(db.All()), n)
		}
	})
}

// Close rewrites the journal only when most of its lines are superseded:
// a freshly generated database closes without a second copy of itself,
// one whose records were each rewritten twice is compacted.
func TestCloseCompactsOnlyStaleJournals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scs.db")
	lines := func() int {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		return strings.Count(string(b), "\n")
	}
	db, err := OpenDB(path)
	require.NoError(t, err)
	generate(t, db, 3, []int{0}, 100, "")
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	st2, err := os.Stat(path)
	require.NoError(t, err)
	assert.True(t, os.SameFile(st, st2), "not rewritten: the journal is all live records")
	assert.Equal(t, 100, lines())

	db, err = OpenDB(path)
	require.NoError(t, err)
	for range 2 {
		for _, r := range db.All() {
			r.Attempts++
			require.NoError(t, db.Put(r))
		}
	}
	assert.Equal(t, 300, lines())
	require.NoError(t, db.Close())
	assert.Equal(t, 100, lines(), "compacted: two of every three lines were superseded")
	db, err = OpenDB(path)
	require.NoError(t, err)
	defer db.Close()
	r := db.All()
	require.Len(t, r, 100)
	assert.Equal(t, 2, r[0].Attempts)
}

// A new PID the SCS draws may be a PID another record holds: drawn at
// random from 36^7, a 100k fleet meets one in about five runs. The index
// has room for one record per PID, so the Put is refused and both records
// stay as they were; before, the other record fell out of the index (its
// device then failed on a PSK it never had, and compaction dropped it).
func TestDBRefusesAPIDHeldByAnotherRecord(t *testing.T) {
	db, err := OpenDB(filepath.Join(t.TempDir(), "scs.db"))
	require.NoError(t, err)
	defer db.Close()
	generate(t, db, 7, []int{0}, 3, "Ready-Pass1!")
	ids := make([]identity.Identity, 3)
	for i := range ids {
		ids[i], _ = identity.Of(7, 0, i)
	}
	a, _ := db.Get(ids[0].PID)
	b, _ := db.Get(ids[1].PID)

	// a's new PID is b's PID.
	clash := a
	clash.NewPID, clash.NewPPS = b.PID, b.PPS
	require.ErrorIs(t, db.Put(clash), ErrPIDInUse)
	got, ok := db.Get(b.PID)
	require.True(t, ok)
	assert.Equal(t, b, got, "b keeps its PID")
	got, _ = db.Get(a.PID)
	assert.Equal(t, a, got, "a is as it was")

	// b's pending new PID is not a's to take either.
	b.NewPID, b.NewPPS, _ = identity.NewPIDPPS(bytes.NewReader(bytes.Repeat([]byte{5}, 64)))
	require.NoError(t, db.Put(b))
	clash.NewPID, clash.NewPPS = b.NewPID, b.NewPPS
	require.ErrorIs(t, db.Put(clash), ErrPIDInUse)
	// Nor is b's PID a's once a is provisioned under it.
	adopt := a
	adopt.PID, adopt.PPS = b.PID, b.PPS
	require.ErrorIs(t, db.Put(adopt), ErrPIDInUse)

	// A record's own moves still go through: a new pair, then adopting it.
	a.NewPID, a.NewPPS, _ = identity.NewPIDPPS(bytes.NewReader(bytes.Repeat([]byte{6}, 64)))
	require.NoError(t, db.Put(a))
	a.PID, a.PPS, a.NewPID, a.NewPPS, a.State = a.NewPID, a.NewPPS, "", "", StateProvisioned
	require.NoError(t, db.Put(a))
	assert.Len(t, db.All(), 3)
	for _, pid := range []string{a.PID, b.PID, b.NewPID, ids[2].PID} {
		_, ok := db.Get(pid)
		assert.True(t, ok, pid)
	}
}

// generate is DB.Generate for a test that expects it to go through.
func generate(t *testing.T, db *DB, seed uint64, shards []int, count int, password string) Generated {
	t.Helper()
	g, err := db.Generate(context.Background(), seed, shards, count, password, nil)
	require.NoError(t, err)
	return g
}

// A database whose SCS gave out new PIDs before they were kept off
// factory PIDs may hold, as a provisioned device's PID, the factory PID
// of a device generated later. That device cannot be added under it (the
// index has one record per PID), and its Hellos would find the other
// record: Generate leaves it out, counts it and names it, without a
// secret, and adds the rest.
func TestGenerateNamesADeviceWhosePIDIsAnothers(t *testing.T) {
	db, err := OpenDB(filepath.Join(t.TempDir(), "scs.db"))
	require.NoError(t, err)
	defer db.Close()
	assert.Equal(t, Generated{Added: 4}, generate(t, db, 7, []int{0}, 4, ""))
	late, _ := identity.Of(7, 1, 2) // shard 1 comes later

	// Device 0 of shard 0 provisioned, under shard 1's device 2's factory
	// PID, as an old SCS could give it; device 1 holds it as a pending
	// new PID.
	other0, _ := identity.Of(9, 0, 0) // valid PPSs of no device here
	other1, _ := identity.Of(9, 0, 1)
	a0, _ := identity.Of(7, 0, 0)
	a, _ := db.Get(a0.PID)
	a.PID, a.PPS, a.State = late.PID, other0.PPS, StateProvisioned
	require.NoError(t, db.Put(a))
	late2, _ := identity.Of(7, 1, 3)
	b0, _ := identity.Of(7, 0, 1)
	b, _ := db.Get(b0.PID)
	b.NewPID, b.NewPPS = late2.PID, other1.PPS
	require.NoError(t, db.Put(b))

	g := generate(t, db, 7, []int{0, 1}, 4, "")
	assert.Equal(t, 4, g.Held, "shard 0, device 0 by its UUID")
	assert.Equal(t, 2, g.Added, "shard 1's devices 0 and 1")
	require.Len(t, g.Clashes, 2)
	assert.Equal(t, Clash{Shard: 1, Index: 2, Host: late.HostName, UUID: late.UUID.String(), PID: late.PID,
		HolderUUID: a.UUID, HolderHost: a.Host, HolderState: StateProvisioned}, g.Clashes[0])
	assert.Equal(t, late2.PID, g.Clashes[1].PID)
	assert.Equal(t, b.UUID, g.Clashes[1].HolderUUID)

	err = g.ClashErr()
	require.ErrorIs(t, err, ErrFactoryPIDHeld)
	for _, want := range []string{"2 device(s)", late.HostName, late.PID, a.UUID, late2.HostName} {
		assert.Contains(t, err.Error(), want)
	}
	for _, secret := range []string{late.PPS, late2.PPS, a.PPS, b.NewPPS} {
		assert.NotContains(t, err.Error(), secret)
	}
	// The holders are as they were, and the devices left out are not
	// findable by UUID: nothing of them was written.
	got, _ := db.Get(late.PID)
	assert.Equal(t, a, got)
	got, _ = db.Get(late2.PID)
	assert.Equal(t, b, got)
	_, ok := db.ByUUID(late.UUID.String())
	assert.False(t, ok)
	assert.Nil(t, Generated{Added: 1}.ClashErr())
}
