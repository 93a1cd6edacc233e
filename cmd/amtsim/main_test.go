package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/fleet"
	"github.com/amtsim/amtsim/internal/peer"
	"github.com/amtsim/amtsim/internal/syncbuf"
	"github.com/amtsim/amtsim/mebx"
)

func amtsim(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = dispatch(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestMEBxCLI(t *testing.T) {
	store := filepath.Join(t.TempDir(), "mebx.json")
	code, _, _ := amtsim(t, "mebx", "init", "--store", store)
	require.Equal(t, exitOK, code)
	code, _, _ = amtsim(t, "mebx", "init", "--store", store)
	assert.Equal(t, exitFailure, code, "init does not overwrite")

	code, _, stderr := amtsim(t, "mebx", "set", "password=admin123", "--store", store)
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, stderr, "strong password policy")
	assert.Contains(t, stderr, "upper-case")
	s, err := mebx.NewFileStore(store).Load()
	require.NoError(t, err)
	assert.Equal(t, mebx.FactoryPassword, s.Password, "a refused password is not stored")

	code, _, stderr = amtsim(t, "mebx", "set", "--store", store, "password=Str0ng!Pass", "hostname=pc-7")
	require.Equal(t, exitOK, code, stderr)
	s, err = mebx.NewFileStore(store).Load()
	require.NoError(t, err)
	assert.Equal(t, "Str0ng!Pass", s.Password)

	code, _, stderr = amtsim(t, "mebx", "set", "--store", store, "pid=0000-037M", "pps=NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ")
	require.Equal(t, exitOK, code, stderr)
	code, out, _ := amtsim(t, "mebx", "show", "--store", store)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "0000-037M")
	assert.Regexp(t, `(?m)^state\s+in$`, out, "PID/PPS entry moved the device into setup")
	assert.NotContains(t, out, "Str0ng!Pass", "secrets are never printed")
	assert.NotContains(t, out, "NKLD", "secrets are never printed")

	b, err := os.ReadFile(store)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(store, b[:len(b)/2], 0o600))
	code, _, stderr = amtsim(t, "mebx", "show", "--store", store)
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, stderr, "truncated")

	code, _, _ = amtsim(t, "mebx", "reset", "--store", store)
	require.Equal(t, exitOK, code)
	s, err = mebx.NewFileStore(store).Load()
	require.NoError(t, err)
	assert.Equal(t, mebx.Defaults(), s)

	code, _, _ = amtsim(t, "mebx", "show")
	assert.Equal(t, exitUsage, code, "--store is required")
	code, _, _ = amtsim(t, "mebx", "frobnicate", "--store", store)
	assert.Equal(t, exitUsage, code)
}

func TestRunEmbeddedJSON(t *testing.T) {
	pcap := filepath.Join(t.TempDir(), "d0.pcap")
	code, out, stderr := amtsim(t, "run", "--devices", "3", "--log-format", "json", "--pcap", pcap)
	require.Equal(t, exitOK, code, stderr)
	count := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var ev map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &ev), "one JSON object per line: %s", sc.Text())
		count[ev["msg"].(string)]++
	}
	assert.Equal(t, 1, count["lan.up"])
	for _, ev := range []string{"power.on", "link.up", "dhcp.bound", "scs.resolved", "amt.listening"} {
		assert.Equal(t, 3, count[ev], ev)
	}
	assert.GreaterOrEqual(t, count["hello.sent"], 3, "every device sent its Hello")
	assert.GreaterOrEqual(t, count["hello.received"], 1, "the listener on the segment read them")
	assert.Equal(t, 1, count["run.done"])

	// The first device's capture decodes with tshark as DHCP and DNS.
	peer.Need(t, "tshark")
	protos, err := exec.Command("tshark", "-r", pcap, "-T", "fields", "-e", "frame.protocols").CombinedOutput()
	require.NoError(t, err, "%s", protos)
	assert.Contains(t, string(protos), "eth:ethertype:ip:udp:dhcp")
	assert.Contains(t, string(protos), "eth:ethertype:ip:udp:dns")
	assert.Contains(t, string(protos), "eth:ethertype:arp")
	assert.Contains(t, string(protos), "eth:ethertype:ip:tcp")
	hellos, err := exec.Command("tshark", "-r", pcap, "-Y", "tcp.dstport == 9971 && tcp.len == 32", "-T", "fields", "-e", "tcp.payload").Output()
	require.NoError(t, err, "%s", hellos)
	assert.Regexp(t, `^010002000000000044454c4c`, strings.TrimSpace(string(hellos)), "a 32-byte PSK Hello: admin set, version 2, retry 0, UUID starting \"DE\"")
	opt15, err := exec.Command("tshark", "-r", pcap, "-Y", "dhcp.option.dhcp == 5", "-T", "fields", "-e", "dhcp.option.domain_name").CombinedOutput()
	require.NoError(t, err, "%s", opt15)
	assert.Contains(t, string(opt15), "amtsim.example", "the ACK carries option 15")
}

func TestRunStaticFromStore(t *testing.T) {
	store := filepath.Join(t.TempDir(), "mebx.json")
	code, _, stderr := amtsim(t, "mebx", "set", "--store", store, "password=Str0ng!Pass", "dhcp=off",
		"ip=198.18.0.50", "netmask=255.254.0.0", "scs.address=198.18.0.2",
		"pid=0000-037M", "pps=NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ")
	require.Equal(t, exitOK, code, stderr)
	code, out, stderr := amtsim(t, "run", "--devices", "1", "--store", store)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "msg=address.static")
	assert.Contains(t, out, "ip=198.18.0.50/15")
	assert.Contains(t, out, "msg=scs.configured")
	assert.Contains(t, out, "source=mebx")
	assert.Contains(t, out, "msg=hello.received from=198.18.0.50:")
	assert.Contains(t, out, "pid=0000037M", "the Hello carries the PID from the store")
}

// A factory-fresh device has no PID/PPS but remote configuration on: it
// sends the PKI Hello with AMT 5's five factory hashes.
func TestRunFactory(t *testing.T) {
	code, out, stderr := amtsim(t, "run", "--factory")
	require.Equal(t, exitOK, code, stderr)
	assert.Regexp(t, `msg=hello.sent .*version=PKI .*hashes=5 admin_set=false`, out)
	assert.Regexp(t, `msg=hello.received .*version=PKI`, out)
}

// A store file that does not exist is created in setup mode, readable by
// mebx show.
func TestRunCreatesStore(t *testing.T) {
	store := filepath.Join(t.TempDir(), "new.json")
	code, _, stderr := amtsim(t, "run", "--store", store)
	require.Equal(t, exitOK, code, stderr)
	s, err := mebx.NewFileStore(store).Load()
	require.NoError(t, err)
	assert.Equal(t, mebx.StateIn, s.State)
	assert.True(t, s.PasswordChanged())
}

func TestUsage(t *testing.T) {
	code, _, _ := amtsim(t)
	assert.Equal(t, exitUsage, code)
	code, _, _ = amtsim(t, "bogus")
	assert.Equal(t, exitUsage, code)
	code, _, _ = amtsim(t, "run", "--log-format", "xml")
	assert.Equal(t, exitUsage, code)
	code, out, _ := amtsim(t, "version")
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, "AMT 5.0")
}

// Under --time-scale the retry counter climbs on the schedule: at ×200 the
// 12-second Hellos come 60 ms apart.
func TestRunTimeScale(t *testing.T) {
	code, out, stderr := amtsim(t, "run", "--until", "forever", "--timeout", "1s", "--time-scale", "200", "--log-format", "json")
	require.Equal(t, exitOK, code, stderr)
	var retries []float64
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var ev map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &ev))
		if ev["msg"] == "hello.received" {
			retries = append(retries, ev["retry"].(float64))
		}
	}
	require.GreaterOrEqual(t, len(retries), 4, "Hellos at 0, 12, 24, 36 s of device time")
	for k, r := range retries {
		assert.Equal(t, float64(k), r)
	}
}

// make run's command: a fleet provisioned end to end, a summary, exit 0,
// and the JSON report.
func TestFleetEmbedded(t *testing.T) {
	rep := filepath.Join(t.TempDir(), "report.json")
	code, out, errs := amtsim(t, "fleet", "-n", "10", "--report", rep)
	require.Equal(t, exitOK, code, "stderr: %s\nstdout: %s", errs, out)
	assert.Contains(t, out, "10 of 10 devices provisioned")
	assert.Contains(t, out, "boot → provisioned: p50")
	assert.Regexp(t, `in phases, p50 / p99: address \d+ / \d+ ms, → first Hello \d+ / \d+ ms, → session \d+ / \d+ ms, session \d+ / \d+ ms`, out)
	assert.Regexp(t, `optiplex-\S+\s+leased\s+198\.18\.`, out, "milestones for a small fleet")
	assert.Regexp(t, `optiplex-\S+\s+provisioned`, out)
	b, err := os.ReadFile(rep)
	require.NoError(t, err)
	var r struct {
		Devices     int  `json:"devices"`
		Provisioned int  `json:"provisioned"`
		OK          bool `json:"ok"`
		SCS         struct {
			Provisioned int `json:"provisioned"`
		} `json:"scs"`
		Latency struct {
			P99 float64 `json:"p99_ms"`
		} `json:"boot_to_provisioned"`
		Phases struct {
			Session struct {
				Count int `json:"count"`
			} `json:"session_to_provisioned"`
		} `json:"phases"`
	}
	require.NoError(t, json.Unmarshal(b, &r))
	assert.Equal(t, 10, r.Devices)
	assert.Equal(t, 10, r.Provisioned)
	assert.Equal(t, 10, r.SCS.Provisioned)
	assert.True(t, r.OK)
	assert.Positive(t, r.Latency.P99)
	assert.Equal(t, 10, r.Phases.Session.Count)
}

// A deadline that cannot be met: exit 3, and the summary says who is left.
func TestFleetDeadline(t *testing.T) {
	code, out, errs := amtsim(t, "fleet", "-n", "5", "--deadline", "1ms", "--steps=false")
	assert.Equal(t, exitNotProvisioned, code, "stderr: %s", errs)
	assert.Contains(t, out, "NOT all provisioned")
	assert.Contains(t, errs, "devices provisioned within 1ms")
}

// The fleet runs the garbage collector for throughput, says so with
// --events, and leaves the process's settings as they were.
func TestFleetGCPolicy(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	percent0 := debug.SetGCPercent(-1)
	debug.SetGCPercent(percent0)
	limit0 := debug.SetMemoryLimit(-1)

	code, out, errs := amtsim(t, "fleet", "-n", "2", "--events", "--log-format", "json")
	require.Equal(t, exitOK, code, "stderr: %s", errs)
	assert.Regexp(t, `"msg":"fleet.gc","policy":"GOGC=400 GOMEMLIMIT=[1-9][0-9]*MiB"`, out)

	percent := debug.SetGCPercent(-1)
	debug.SetGCPercent(percent)
	assert.Equal(t, percent0, percent)
	assert.Equal(t, limit0, debug.SetMemoryLimit(-1))
}

// --memory-per-device holds the run to a soft limit of that much per
// device, 256 MiB at the least, and puts the old limit back after.
func TestFleetMemoryPerDevice(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	limit0 := debug.SetMemoryLimit(-1)
	report := filepath.Join(t.TempDir(), "r.json")
	code, out, errs := amtsim(t, "fleet", "-n", "2", "--memory-per-device", "64KiB", "--events", "--log-format", "json", "--report", report)
	require.Equal(t, exitOK, code, "stderr: %s", errs)
	assert.Contains(t, out, `"msg":"fleet.gc","policy":"GOGC=400 GOMEMLIMIT=256MiB"`)
	assert.Equal(t, limit0, debug.SetMemoryLimit(-1))
	// The run says what it held: the summary and the report.
	assert.Regexp(t, `memory: peak RSS [0-9.]+ MB, [0-9.]+ KB per device`, out)
	b, err := os.ReadFile(report)
	require.NoError(t, err)
	r, err := fleet.ParseReport(b)
	require.NoError(t, err)
	assert.Greater(t, r.PeakRSS, uint64(1<<20))
}

// A byte count with a binary unit, and back.
func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "65536": 64 << 10, "64KiB": 64 << 10, "64k": 64 << 10, "1MiB": 1 << 20, "3G": 3 << 30, "100b": 100} {
		var b byteSize
		require.NoError(t, b.Set(in), in)
		assert.Equal(t, want, int64(b), in)
		var back byteSize
		require.NoError(t, back.Set(b.String()), in)
		assert.Equal(t, b, back, in)
	}
	for _, in := range []string{"", "KiB", "1.5MiB", "64TiB", "-1", "9999999999G", "12 KiB"} {
		var b byteSize
		assert.Error(t, b.Set(in), in)
	}
}

// --cpu-profile leaves a profile that pprof reads.
func TestFleetCPUProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.prof")
	code, _, errs := amtsim(t, "fleet", "-n", "2", "--steps=false", "--cpu-profile", path)
	require.Equal(t, exitOK, code, "stderr: %s", errs)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	p, err := profile.Parse(f)
	require.NoError(t, err)
	assert.Equal(t, "cpu", p.SampleType[len(p.SampleType)-1].Type)
}

// The PKI path from the command line: the embedded SCS provisions by
// remote configuration, for either firmware generation, and says so in its
// events; the standalone SCS prints the hash entry devices need.
func TestFleetPKI(t *testing.T) {
	for _, fw := range []string{"amt5", "amt11"} {
		code, out, errs := amtsim(t, "fleet", "-n", "4", "--provisioning", "pki", "--firmware", fw, "--events")
		require.Equal(t, exitOK, code, errs)
		assert.Contains(t, out, "4 of 4 devices provisioned")
		assert.Regexp(t, `msg=hello.sent .*version=PKI`, out)
		assert.Regexp(t, `msg=pki.accepted .*cn=ProvisionServer.amtsim.example`, out)
		assert.Regexp(t, `msg=provisioned .*method=pki`, out)
		assert.Contains(t, out, "firmware="+fw)
	}
	code, _, errs := amtsim(t, "fleet", "--firmware", "amt99")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errs, "amt11, amt5")
	code, _, errs = amtsim(t, "fleet", "--provisioning", "kerberos")
	assert.Equal(t, exitUsage, code, errs)
}

func TestSCSPKIPrintsRootEntry(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	var out syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- dispatch(ctx, []string{"scs", "--db", filepath.Join(dir, "scs.db"), "--listen", "127.0.0.1:0", "--pki", "--domain", "lab.example"}, &out, io.Discard)
	}()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "msg=scs.listening") }, 20*time.Second, 10*time.Millisecond)
	cancel()
	<-done
	assert.Regexp(t, `pki: provisioning certificate CN=ProvisionServer.lab.example; devices trust it with: amtsim mebx set --store FILE 'pki.hash=amtsim SCS CA=sha256:[0-9a-f]{64}'`, out.String())
	assert.Contains(t, out.String(), "pki=true")
	code, _, _ := amtsim(t, "scs", "--db", filepath.Join(dir, "x.db"), "--pki")
	assert.Equal(t, exitUsage, code, "--pki without a name for the certificate")
}
