package scs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/peer"
)

// One database has one owner: a second open, in this process or another,
// is refused with a clear error until the first closes.
func TestDBLockedForItsOwner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scs.db")
	db, err := OpenDB(path)
	require.NoError(t, err)
	_, err = OpenDB(path)
	require.ErrorIs(t, err, ErrDBLocked)
	assert.Contains(t, err.Error(), fmt.Sprintf("process %d", os.Getpid()))
	require.NoError(t, db.Close())
	db, err = OpenDB(path)
	require.NoError(t, err, "free again once closed")
	require.NoError(t, db.Close())
}

func record(t *testing.T, i int, lastError string) Record {
	id, err := identity.Of(31, 0, i)
	if err != nil {
		panic(err)
	}
	return Record{PID: id.PID, PPS: id.PPS, State: StateNew, LastError: lastError}
}

// A journal that a full disk left with a torn record, and a whole record
// appended onto it (what writes did before they were cut back), opens
// with every whole record and the torn one counted.
func TestDBRecordAppendedOntoTornOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scs.db")
	line := func(r Record) string {
		b, err := json.Marshal(r)
		require.NoError(t, err)
		return string(b)
	}
	a, b, c := record(t, 0, ""), record(t, 1, ""), record(t, 2, "")
	torn := line(b)[:25]
	require.NoError(t, os.WriteFile(path, []byte(line(a)+"\n"+torn+line(c)+"\n"), 0o600))
	db, err := OpenDB(path)
	require.NoError(t, err)
	defer db.Close()
	assert.Equal(t, 1, db.Torn())
	_, ok := db.Get(a.PID)
	assert.True(t, ok)
	_, ok = db.Get(c.PID)
	assert.True(t, ok, "nothing after a torn record is lost")
}

// The full disk, for real: a small tmpfs filled on purpose, a write cut
// short by ENOSPC, space freed, one more write, and kill -9. The journal
// opens, with every record whose Put returned nil.
func TestDBFullDiskThenCrash(t *testing.T) {
	if dir := os.Getenv("AMTSIM_FULL_DISK_DIR"); dir != "" {
		fullDiskHelper(dir)
		return
	}
	peer.Root(t, "mounts a small tmpfs to fill")
	dir := t.TempDir()
	require.NoError(t, unix.Mount("tmpfs", dir, "tmpfs", 0, "size=256k"))
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	cmd := exec.Command(os.Args[0], "-test.run=^TestDBFullDiskThenCrash$", "-test.v")
	cmd.Env = append(os.Environ(), "AMTSIM_FULL_DISK_DIR="+dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "the helper is killed: %v\n%s", err, out)
	ws, _ := ee.Sys().(syscall.WaitStatus)
	require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "%v\n%s", err, out)
	require.Contains(t, string(out), "short write failed:", "%s", out)

	db, err := OpenDB(filepath.Join(dir, "scs.db"))
	require.NoError(t, err, "the journal opens after a full disk and a crash")
	defer db.Close()
	for _, pid := range strings.Fields(string(must(os.ReadFile(filepath.Join(dir, "acked"))))) {
		_, ok := db.Get(pid)
		assert.True(t, ok, "acknowledged record %s is there", pid)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// fullDiskHelper runs in the child: records until the disk is full, one
// cut short, one more after room is made, then SIGKILL to itself.
func fullDiskHelper(dir string) {
	db, err := OpenDB(filepath.Join(dir, "scs.db"))
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	var acked []string
	note := func() { _ = os.WriteFile(filepath.Join(dir, "acked"), []byte(strings.Join(acked, " ")), 0o600) }
	put := func(r Record) error {
		err := db.Put(r)
		if err == nil {
			acked = append(acked, r.PID)
		}
		return err
	}
	if err := put(record(nil, 0, "")); err != nil {
		fmt.Println("first put:", err)
		os.Exit(2)
	}
	// Fill the disk but for one page, then write a record larger than it.
	filler, _ := os.Create(filepath.Join(dir, "filler"))
	page := make([]byte, 4096)
	for {
		if _, err := filler.Write(page); err != nil {
			break
		}
	}
	st, _ := filler.Stat()
	_ = filler.Truncate(st.Size() - 4096)
	filler.Close()
	big := strings.Repeat("x", 12000)
	if err := put(record(nil, 1, big)); err == nil {
		fmt.Println("the big write fit: no short write")
		os.Exit(2)
	} else {
		fmt.Println("short write failed:", err)
	}
	if _, ok := db.Get(record(nil, 1, "").PID); ok {
		fmt.Println("the failed record is in memory, though not on disk")
		os.Exit(2)
	}
	_ = os.Remove(filepath.Join(dir, "filler"))
	if err := put(record(nil, 2, "")); err != nil {
		fmt.Println("put after room was made:", err)
		os.Exit(2)
	}
	// The acked list goes to the (now roomy) disk, then the crash.
	note()
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// An import is all or nothing, and changes a PID the database holds only
// when told to, keeping its UUID, state and pending new pair.
func TestImportAllOrNothing(t *testing.T) {
	db, err := OpenDB(filepath.Join(t.TempDir(), "scs.db"))
	require.NoError(t, err)
	defer db.Close()
	a, b := record(t, 0, ""), record(t, 1, "")
	a.UUID = "4C4C4544-0030-3110-8030-B0C04F303130"
	a.NewPID, a.NewPPS = record(t, 2, "").PID, record(t, 2, "").PPS
	require.NoError(t, db.Put(a))
	other := record(t, 3, "").PPS

	// A bad line after good ones: nothing is imported.
	_, err = db.ImportCSV(strings.NewReader(b.PID+","+b.PPS+"\nBADPID,"+other+"\n"), ImportOptions{})
	require.ErrorContains(t, err, "line 2")
	_, ok := db.Get(b.PID)
	assert.False(t, ok, "the good line before the bad one is not imported")

	// A PID the database holds: refused without Replace, nothing imported.
	_, err = db.ImportCSV(strings.NewReader(b.PID+","+b.PPS+"\n"+a.PID+","+other+",New-Pass1!\n"), ImportOptions{})
	require.ErrorContains(t, err, "--import-replace")
	_, ok = db.Get(b.PID)
	assert.False(t, ok)
	got, _ := db.Get(a.PID)
	assert.Equal(t, a.PPS, got.PPS)

	// The same line twice in one file is refused.
	_, err = db.ImportCSV(strings.NewReader(b.PID+","+b.PPS+"\n"+b.PID+","+b.PPS+"\n"), ImportOptions{})
	require.ErrorContains(t, err, "line 1 too")

	// With Replace: the PPS, password change; UUID, state and the pending
	// new pair stay.
	n, err := db.ImportCSV(strings.NewReader(b.PID+","+b.PPS+"\n"+a.PID+","+other+",New-Pass1!\n"), ImportOptions{Replace: true})
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	got, _ = db.Get(a.PID)
	assert.Equal(t, other, got.PPS)
	assert.Equal(t, "New-Pass1!", got.Password)
	assert.Equal(t, a.UUID, got.UUID)
	assert.Equal(t, a.NewPID, got.NewPID, "the pending commit is not lost")
	_, ok = db.ByUUID(a.UUID)
	assert.True(t, ok)

	// A PID that is another record's pending new PID cannot be imported.
	_, err = db.ImportCSV(strings.NewReader(a.NewPID+","+other+"\n"), ImportOptions{Replace: true})
	require.ErrorContains(t, err, "pending new PID")
}
