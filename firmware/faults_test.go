package firmware

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/amtsim/amtsim/digest"
	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
	"github.com/amtsim/amtsim/wsman"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Each answer a call fault gives, on the call it names and no other, for
// as many answers as it was armed for.
func TestCallFaults(t *testing.T) {
	r := newRig(t, 7)
	ws := r.wsmanAs("admin", testPassword)
	ctx := context.Background()
	get := func() (*http.Response, []byte, error) {
		body := wsman.Marshal(wsman.Header{Action: wsman.ActionGet, MessageID: "1", To: wsman.Anonymous,
			ResourceURI: wsman.AMTSchema + "AMT_GeneralSettings"}, "")
		resp, err := ws.HTTP.Post(ws.URL, wsman.ContentType, strings.NewReader(string(body)))
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	_, ok, err := get()
	require.NoError(t, err)
	require.Contains(t, string(ok), "DigestRealm")

	assert.Error(t, r.d.SetCallFault(CallFault{Call: "CommitChanges", Answer: "slow"}))
	assert.Error(t, r.d.SetCallFault(CallFault{Call: "CommitChanges", Answer: AnswerDelay}))

	require.NoError(t, r.d.SetCallFault(CallFault{Call: "Get:AMT_GeneralSettings", Answer: AnswerEmpty, Times: 1}))
	_, err = ws.Get(ctx, wsman.AMTSchema+"AMT_EthernetPortSettings", map[string]string{"InstanceID": "Intel(r) AMT Ethernet Port Settings 0"})
	require.NoError(t, err, "another call is answered as ever")
	resp, b, err := get()
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Empty(t, b, "empty: 200 and no body")
	_, b, err = get()
	require.NoError(t, err)
	assert.Equal(t, ok[:100], b[:100], "armed for one answer only")

	require.NoError(t, r.d.SetCallFault(CallFault{Call: "Get:AMT_GeneralSettings", Answer: AnswerFault}))
	for range 2 {
		resp, b, err = get()
		require.NoError(t, err)
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
		env, err := wsman.ParseEnvelope(b)
		require.NoError(t, err)
		assert.Equal(t, "Fault", env.Body.Name.Local)
	}

	require.NoError(t, r.d.SetCallFault(CallFault{Call: "Get:AMT_GeneralSettings", Answer: AnswerDrop}))
	_, _, err = get()
	assert.Error(t, err, "drop: the connection closes without an answer")

	require.NoError(t, r.d.SetCallFault(CallFault{Call: "Get:AMT_GeneralSettings", Answer: AnswerDelay, Delay: 300 * time.Millisecond}))
	start := time.Now()
	_, b, err = get()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	assert.Contains(t, string(b), "DigestRealm", "delay: the answer itself is whole")

	require.NoError(t, r.d.SetCallFault(CallFault{}))
	_, b, err = get()
	require.NoError(t, err)
	assert.Contains(t, string(b), "DigestRealm", "disarmed")
	assert.Len(t, r.d.ev.named(string(event.FaultInjected)), 5)
}

// A pulled cable drops every frame and stays pulled through a power
// cycle; plugged in, the device answers again.
func TestSetLinkAndNetem(t *testing.T) {
	r := newRig(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws := r.wsmanAs("admin", testPassword)
	_, err := ws.Get(ctx, wsman.AMTSchema+"AMT_GeneralSettings", nil)
	require.NoError(t, err)

	r.d.SetLink(false)
	r.d.ev.wait(t, string(event.LinkDown), 1, time.Second)
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = r.wsmanAs("admin", testPassword).Get(short, wsman.AMTSchema+"AMT_GeneralSettings", nil)
	cancelShort()
	assert.Error(t, err, "no answer with the cable out")
	r.d.SetLink(true)
	r.d.ev.wait(t, string(event.LinkUp), 2, time.Second)
	_, err = r.wsmanAs("admin", testPassword).Get(ctx, wsman.AMTSchema+"AMT_GeneralSettings", nil)
	require.NoError(t, err)

	assert.Error(t, r.d.SetNetem(nic.Netem{Loss: 3}, nic.Netem{}))
	require.NoError(t, r.d.SetNetem(nic.Netem{Loss: 1, Seed: 1}, nic.Netem{}))
	short, cancelShort = context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = r.wsmanAs("admin", testPassword).Get(short, wsman.AMTSchema+"AMT_GeneralSettings", nil)
	cancelShort()
	assert.Error(t, err, "every frame the device sends is lost")
	assert.NotZero(t, r.d.NICStats().TxImpairDrops.Load())
	require.NoError(t, r.d.SetNetem(nic.Netem{}, nic.Netem{}))
	_, err = r.wsmanAs("admin", testPassword).Get(ctx, wsman.AMTSchema+"AMT_GeneralSettings", nil)
	require.NoError(t, err)
}

// A Put whose body is not the class's instance is refused with a WS-MAN
// fault (400), and the settings are unchanged; it is not answered as a
// Put that took.
func TestPutWithJunkBodyIsAFault(t *testing.T) {
	r := newRig(t, 9)
	ws := r.wsmanAs("admin", testPassword)
	before := r.d.current()
	for _, body := range []string{"<junk/>", "", "<h:AMT_Nothing xmlns:h=\"urn:x\"><h:HostName>evil</h:HostName></h:AMT_Nothing>"} {
		env := wsman.Marshal(wsman.Header{Action: wsman.ActionPut, MessageID: "7", To: wsman.Anonymous,
			ResourceURI: wsman.AMTSchema + "AMT_GeneralSettings"}, body)
		resp, err := ws.HTTP.Post(ws.URL, wsman.ContentType, strings.NewReader(string(env)))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "%q: %s", body, b)
		e, err := wsman.ParseEnvelope(b)
		require.NoError(t, err, "%s", b)
		require.NotNil(t, e.Body, "%s", b)
		assert.Equal(t, "Fault", e.Body.Name.Local, "%q: %s", body, b)
	}
	assert.Equal(t, before.HostName, r.d.current().HostName)
}

// Ten wrong passwords in a row block the device's logins (the right one
// too) and the device closes the connection on the guesser; once the
// block is over the right password logs in.
func TestDigestLockout(t *testing.T) {
	r := newRig(t, 10)
	ctx := context.Background()
	c, err := r.dial(ctx, "tcp", netip.AddrPortFrom(r.d.Addr(), PortHTTP).String())
	require.NoError(t, err)
	defer c.Close()
	br := bufio.NewReader(c)
	body := string(wsman.Marshal(wsman.Header{Action: wsman.ActionGet, MessageID: "1", ResourceURI: wsman.AMTSchema + "AMT_GeneralSettings"}, ""))
	send := func(cl *digest.Client) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodPost, "http://device/wsman", strings.NewReader(body))
		if cl != nil {
			h, err := cl.Authorize(http.MethodPost, "/wsman")
			require.NoError(t, err)
			req.Header.Set("Authorization", h)
		}
		if err := req.Write(c); err != nil {
			return nil, err
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, nil
	}
	resp, err := send(nil)
	require.NoError(t, err)
	wrong := &digest.Client{Username: "admin", Password: "Wrong-Pass9!"}
	for i := range 10 {
		require.NoError(t, wrong.Observe(resp.Header.Get("WWW-Authenticate")))
		resp, err = send(wrong)
		require.NoError(t, err, "guess %d on the same connection", i+1)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	}
	right := &digest.Client{Username: "admin", Password: testPassword}
	require.NoError(t, right.Observe(resp.Header.Get("WWW-Authenticate")))
	resp, err = send(right)
	require.NoError(t, err)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "blocked: the right password too")
	assert.True(t, resp.Close, "the device closes the connection on the guesser")
	_, err = send(right)
	assert.Error(t, err, "the connection is gone")
	assert.NotEmpty(t, r.d.ev.named(string(event.AuthFailed)))

	// 5 s of the device's clock (×100 here) later, the right one passes.
	require.Eventually(t, func() bool {
		_, err := r.wsmanAs("admin", testPassword).Get(ctx, wsman.AMTSchema+"AMT_GeneralSettings", nil)
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
}

// A held call is carried out only once its hold is over, and answered
// then: CommitChanges held 500 ms leaves the device in setup for that
// long after the fault takes the call, where a delayed answer would have
// committed at once.
func TestHeldCallTakesEffectLate(t *testing.T) {
	r := newRig(t, 9)
	ws := r.wsmanAs("admin", testPassword)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	assert.Error(t, r.d.SetCallFault(CallFault{Call: "CommitChanges", Answer: AnswerHold}), "a hold needs a delay")
	const hold = 500 * time.Millisecond
	require.NoError(t, r.d.SetCallFault(CallFault{Call: "CommitChanges", Answer: AnswerHold, Delay: hold, Times: 1}))
	done := make(chan error, 1)
	go func() {
		_, err := ws.Invoke(ctx, wsman.AMTSchema+"AMT_SetupAndConfigurationService", "CommitChanges", nil, nil)
		done <- err
	}()
	r.d.ev.wait(t, string(event.FaultInjected), 1, 10*time.Second)
	taken := time.Now()
	r.d.ev.wait(t, string(event.Provisioned), 1, 10*time.Second)
	assert.GreaterOrEqual(t, time.Since(taken), hold/2, "committed before the hold was over")
	require.NoError(t, <-done, "answered once carried out")
	assert.Equal(t, mebx.StatePost, r.d.current().State)
}
