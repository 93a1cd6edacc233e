package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/internal/peer"
)

// tshark reads a capture: one line per frame. tshark fails on a file that
// ends inside a record.
func tshark(path, filter, field string) ([]string, error) {
	args := []string{"-r", path, "-T", "fields", "-e", field}
	if filter != "" {
		args = append(args, "-Y", filter)
	}
	var stderr strings.Builder
	cmd := exec.Command("tshark", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("tshark -r %s: %w: %s", path, err, stderr.String())
	}
	s := strings.TrimSpace(string(out))
	if s == "" {
		return nil, nil
	}
	return strings.Split(s, "\n"), nil
}

func tsharkFields(t *testing.T, path, filter, field string) []string {
	t.Helper()
	lines, err := tshark(path, filter, field)
	require.NoError(t, err)
	return lines
}

// The running device's capture is a file tshark reads while amtsim run
// goes on (DHCP, DNS and the Hello are in it), and after SIGTERM it holds
// everything up to the power-off.
func TestCaptureReadWhileRunning(t *testing.T) {
	peer.Need(t, "tshark")
	path := filepath.Join(t.TempDir(), "d0.pcap")
	p := start(t, "run", "--devices", "2", "--until", "forever", "--pcap", path)
	p.waitFor(t, "msg=hello.sent", 30*time.Second)
	// From its creation on, the file is one tshark reads whole; the Hello
	// is in it within the flush interval, while the device runs.
	require.Eventually(t, func() bool {
		hellos, err := tshark(path, "tcp.dstport == 9971 && tcp.len == 32", "tcp.payload")
		return assert.NoError(t, err) && len(hellos) > 0
	}, 30*time.Second, 50*time.Millisecond, "the Hello is in the capture while the device runs")
	running := tsharkFields(t, path, "", "frame.protocols")
	assert.Contains(t, strings.Join(running, "\n"), "eth:ethertype:ip:udp:dhcp")
	assert.Contains(t, strings.Join(running, "\n"), "eth:ethertype:ip:udp:dns")

	code, _ := p.stop(t, syscall.SIGTERM)
	assert.Equal(t, exitInterrupted, code)
	after := tsharkFields(t, path, "", "frame.protocols")
	assert.GreaterOrEqual(t, len(after), len(running), "nothing lost at the stop")
}

// fleet --pcap-dir writes one capture per device, named by host name, each
// a whole pcap of that device's DHCP, DNS, Hello and TLS.
func TestFleetPcapDir(t *testing.T) {
	peer.Need(t, "tshark")
	dir := filepath.Join(t.TempDir(), "pcaps")
	code, stdout, stderr := amtsim(t, "fleet", "-n", "3", "--pcap-dir", dir)
	require.Equal(t, exitOK, code, "%s\n%s", stdout, stderr)
	files, err := filepath.Glob(filepath.Join(dir, "optiplex-*.pcap"))
	require.NoError(t, err)
	require.Len(t, files, 3)
	for _, f := range files {
		host := strings.TrimSuffix(filepath.Base(f), ".pcap")
		assert.Contains(t, stdout, host, "named by the device's host name")
		protos := strings.Join(tsharkFields(t, f, "", "frame.protocols"), "\n")
		assert.Contains(t, protos, "dhcp", f)
		assert.Contains(t, protos, "dns", f)
		assert.NotEmpty(t, tsharkFields(t, f, "tcp.dstport == 9971 && tcp.len == 32", "tcp.payload"), "%s: the Hello", f)
		assert.NotEmpty(t, tsharkFields(t, f, "tcp.srcport == 16993", "frame.number"), "%s: the SCS's sessions on 16993", f)
	}
}
