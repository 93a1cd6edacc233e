package hello

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/amtsim/amtsim/identity"
)

// A flood of connections that send nothing, past the process's descriptor
// limit, does not end the receiver: accept's EMFILE is counted, reported
// and waited out, and the next real Hello is read. The receiver runs in a
// child process held to 48 descriptors.
func TestReceiverOutlivesDescriptorExhaustion(t *testing.T) {
	if os.Getenv("AMTSIM_FD_HELPER") != "" {
		floodHelper()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestReceiverOutlivesDescriptorExhaustion$")
	cmd.Env = append(os.Environ(), "AMTSIM_FD_HELPER=1")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(out)
	require.True(t, lines.Scan())
	addr, ok := strings.CutPrefix(lines.Text(), "listening ")
	require.True(t, ok, lines.Text())

	var idle []net.Conn
	for range 200 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		idle = append(idle, c)
	}
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	id, _ := identity.Of(3, 1, 5)
	m := Message{Version: VersionPSK, UUID: id.UUID, PID: id.PID}
	b, err := m.Marshal()
	require.NoError(t, err)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	_, err = c.Write(b)
	require.NoError(t, err)
	c.Close()

	var seen []string
	for lines.Scan() {
		seen = append(seen, lines.Text())
		if strings.HasPrefix(lines.Text(), "hello ") {
			break
		}
	}
	assert.Contains(t, seen, "hello "+id.PID, "the Hello after the flood is read: %v", seen)
	assert.True(t, strings.HasPrefix(strings.Join(seen, "\n"), "accept failed"), "the failure was reported: %v", seen)
	require.NoError(t, cmd.Wait(), "the receiver did not exit on the flood")
}

func floodHelper() {
	lim := unix.Rlimit{Cur: 48, Max: 48}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Println("setrlimit:", err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var reported atomic.Bool
	r := NewReceiver(ReceiverOptions{ReadTimeout: 200 * time.Millisecond, ErrorInterval: time.Hour,
		OnAcceptError: func(err error, n uint64) {
			if !reported.Swap(true) {
				fmt.Printf("accept failed (%d): %v\n", n, err)
			}
		},
		Handle: func(h Received) {
			fmt.Println("hello " + h.PID)
			cancel()
		}})
	fmt.Println("listening " + ln.Addr().String())
	if err := r.Serve(ctx, ln); err != nil {
		fmt.Println("serve ended:", err)
		os.Exit(1)
	}
	if r.Stats.AcceptErrors.Load() == 0 {
		fmt.Println("no accept error: the flood did not exhaust the descriptors")
		os.Exit(1)
	}
	os.Exit(0)
}
