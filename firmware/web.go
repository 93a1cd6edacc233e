package firmware

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/amtsim/amtsim/digest"
	"github.com/amtsim/amtsim/eoi"
	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/negotiate"
	"github.com/amtsim/amtsim/tlspsk"
	"github.com/amtsim/amtsim/wsman"
)

// ServerHeader is what AMT 5 puts on every HTTP answer (Profile.ServerHeader
// for the device's own generation).
const ServerHeader = "Intel(R) Active Management Technology " + FirmwareVersion

// Limits of the web server: a request line and headers, a body (an
// envelope with a certificate is a few KiB; AMT takes up to 150 KiB), and
// how long a quiet connection stays open.
const (
	maxHeaderBytes = 8 << 10
	idleTimeout    = 60 * time.Second
)

// holdLocked adds c to the connections PowerOff closes (d.mu held, the
// device on).
func (d *Device) holdLocked(c net.Conn) {
	if d.conns == nil {
		d.conns = make(map[net.Conn]struct{}, 1)
	}
	d.conns[c] = struct{}{}
}

// hold adds c to the connections PowerOff closes; when the device is off
// it closes c and reports false.
func (d *Device) hold(c net.Conn) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.on {
		c.Close()
		return false
	}
	d.holdLocked(c)
	return true
}

// release forgets c (closed or about to be).
func (d *Device) release(c net.Conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if delete(d.conns, c); len(d.conns) == 0 {
		d.conns = nil // an idle device keeps no map
	}
}

// accept serves a connection on an AMT port: TLS first on 16993 (TLS-PSK
// with PID/PPS in setup, the installed certificate once provisioned), then
// HTTP/1.1 with Digest. Each connection is one session.
func (d *Device) accept(port uint16, c net.Conn) {
	d.mu.Lock()
	if !d.on {
		d.mu.Unlock()
		c.Close()
		return
	}
	d.holdLocked(c)
	d.work.Add(1)
	d.mu.Unlock()
	defer func() {
		d.release(c)
		d.work.Done()
	}()
	// The label makes the device's share of a CPU profile visible apart
	// from its peers' in the same process (BenchmarkProvisioning reads it).
	pprof.Do(context.Background(), deviceLabel, func(context.Context) { d.serveConn(port, c) })
}

// deviceLabel marks the goroutines serving AMT connections in CPU profiles.
var deviceLabel = pprof.Labels("amtsim", "device")

func (d *Device) serveConn(port uint16, c net.Conn) {
	d.Stats.ConnsAccepted.Add(1)
	d.emit(event.ConnAccepted, "port", port, "peer", c.RemoteAddr().String())
	defer c.Close()
	s := d.current()
	sess := &session{d: d, id: d.sessionIDs.Add(1), port: port, peer: c.RemoteAddr().String()}
	var conn net.Conn = c
	if port == PortHTTPS {
		tc, peer, err := d.tlsServer(c, s)
		if err != nil {
			d.Stats.TLSFailures.Add(1)
			if r, ok := errors.AsType[*CertRefusal](err); ok {
				d.Stats.CertRefusals.Add(1)
				d.emit(event.TLSFailed, "peer", sess.peer, "reason", r.Reason, "err", err.Error())
				return
			}
			d.emit(event.TLSFailed, "peer", sess.peer, "err", err.Error())
			return
		}
		conn, sess.tls, sess.pki = tc, true, peer
		if peer != nil {
			d.emit(event.PKIAccepted, "peer", sess.peer, "cn", peer.CN, "root", peer.RootName, "hash", peer.RootHash)
		}
	}
	defer d.endSession(sess)
	d.serveHTTP(conn, sess)
}

// tlsServer runs the handshake that the settings call for: the installed
// certificate once provisioned, else the setup handshake (TLS-PSK or
// remote configuration, setupTLS). peer is set for remote configuration.
func (d *Device) tlsServer(c net.Conn, s mebx.Settings) (net.Conn, *pkiPeer, error) {
	d.mu.Lock()
	pctx := d.ctx
	d.mu.Unlock()
	if pctx == nil {
		return nil, nil, errors.New("the device is off")
	}
	// The handshake ends with the power cycle, or after 30 s.
	ctx, cancel := context.WithTimeout(pctx, 30*time.Second)
	defer cancel()
	if s.State == mebx.StatePost && s.AMT.TLSEnabled {
		cert, err := d.tlsCertificate(&s)
		if err != nil {
			return nil, nil, fmt.Errorf("no TLS certificate: %w", err)
		}
		tc := tls.Server(c, &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   d.o.TLSMinVersion, MaxVersion: d.o.TLSMaxVersion,
			// AMT's suites: RSA key exchange, AES-CBC with SHA-1 (and
			// AES-GCM from TLS 1.2).
			CipherSuites: rsaSuites(d.o.TLSMaxVersion),
			// No RFC 5077 tickets: nothing we have read says AMT issues
			// them, no SCS we know resumes, and each one costs the device
			// a key derivation and an encryption per handshake.
			SessionTicketsDisabled: true,
		})
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, nil, err
		}
		return tc, nil, nil
	}
	if s.State == mebx.StatePost {
		return nil, nil, errors.New("provisioned without TLS: 16993 is closed")
	}
	return d.setupTLS(ctx, c, &s)
}

// pskServer is the TLS-PSK handshake with the PID/PPS of settings s, on
// the connection whose ClientHello pc peeked (its reader serves the
// session's records too).
func (d *Device) pskServer(ctx context.Context, pc *peekedConn, s *mebx.Settings) (net.Conn, error) {
	pid, pps := s.PID, s.PPS
	tc := tlspsk.ServerReader(pc.Conn, pc.r, tlspsk.AMT5Config(pid, func(identity string) ([]byte, error) {
		if identity != pid {
			return nil, fmt.Errorf("unknown PSK identity %q", identity)
		}
		return tlspsk.AMTKey(pps), nil
	}))
	if err := tc.Handshake(ctx); err != nil {
		return nil, err
	}
	return tc, nil
}

// tlsCertificate builds (and caches) the certificate 16993 serves.
func (d *Device) tlsCertificate(s *mebx.Settings) (tls.Certificate, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tlsCert != nil && d.tlsCertID == s.AMT.TLSCert {
		return *d.tlsCert, nil
	}
	for _, c := range s.AMT.Certs {
		if c.ID != s.AMT.TLSCert {
			continue
		}
		kp, err := certKey(&s.AMT, c.DER)
		if err != nil {
			return tls.Certificate{}, err
		}
		k, err := parseRSAKey(kp.DER)
		if err != nil {
			return tls.Certificate{}, err
		}
		cert := tls.Certificate{Certificate: [][]byte{c.DER}, PrivateKey: k}
		d.tlsCert, d.tlsCertID = &cert, c.ID
		return cert, nil
	}
	return tls.Certificate{}, fmt.Errorf("certificate %q not held", s.AMT.TLSCert)
}

// serveHTTP reads requests until the peer closes, goes quiet or asks to
// close. It is a small HTTP/1.1 server of its own: net/http's server
// wants a listener and a goroutine per idle connection, and the device
// must answer on its own terms (the Server header, the 401 realm, faults
// with bodies).
func (d *Device) serveHTTP(c net.Conn, sess *session) {
	// lr bounds what one request may read, headers included, so a peer
	// cannot make the device buffer without end.
	lr := &io.LimitedReader{R: c}
	br := bufio.NewReaderSize(lr, 4096)
	bw := bufio.NewWriterSize(c, 4096)
	var (
		deadline time.Time
		body     []byte // the array requests are read into (see readRequest)
	)
	for {
		// The idle limit is pushed out only once half of it is used:
		// setting a deadline arms a timer, and most requests come well
		// inside the limit. A connection idles between 30 and 60 s.
		if now := time.Now(); deadline.Sub(now) < idleTimeout/2 {
			deadline = now.Add(idleTimeout)
			_ = c.SetReadDeadline(deadline)
		}
		lr.N = maxHeaderBytes + wsman.MaxEnvelopeSize + 1
		req, err := readRequest(br, body)
		if err != nil {
			if !errors.Is(err, io.EOF) && !isTimeout(err) {
				d.Stats.BadRequests.Add(1)
				d.emit(event.HTTPBadRequest, "peer", sess.peer, "err", err.Error())
				status := http.StatusBadRequest
				if errors.Is(err, errBodyTooLarge) {
					status = http.StatusRequestEntityTooLarge
				}
				writeResponse(bw, response{status: status, server: d.server}, true)
			}
			return
		}
		resp := d.handle(sess, req)
		if resp.drop {
			return
		}
		// The answer is built (in sess.out); nothing keeps the request's
		// body, so the next request is read into its array. A body larger
		// than the usual few kilobytes is not kept for the connection's life.
		if c := cap(req.body); c > cap(body) && c <= keptBody {
			body = req.body[:0]
		}
		resp.server = d.server
		// After a commit, an unprovision or a power command the session is
		// over: say so, so that the client does not reuse the connection.
		closing := req.close || sess.over || resp.close
		if err := writeResponse(bw, resp, closing); err != nil || closing {
			return
		}
	}
}

// keptBody is the largest request body array a connection keeps for its
// next request: a certificate or a key with its envelope fits.
const keptBody = 16 << 10

// response is what the device answers: always these headers, in this
// order, as the firmware's own web server writes them.
type response struct {
	status       int
	contentType  string
	authenticate string // WWW-Authenticate, on a 401
	negotiate    bool   // a second WWW-Authenticate: Negotiate, on a 401
	body         []byte
	server       string // the Server header: the firmware's version
	drop         bool   // no answer: the connection closes (AnswerDrop)
	close        bool   // the connection closes after this answer
}

func writeResponse(w *bufio.Writer, r response, closing bool) error {
	w.WriteString("HTTP/1.1 ")
	w.WriteString(strconv.Itoa(r.status))
	w.WriteByte(' ')
	w.WriteString(http.StatusText(r.status))
	w.WriteString("\r\n")
	if closing {
		w.WriteString("Connection: close\r\n")
	}
	if r.authenticate != "" {
		w.WriteString("WWW-Authenticate: ")
		w.WriteString(r.authenticate)
		w.WriteString("\r\n")
	}
	if r.negotiate {
		w.WriteString("WWW-Authenticate: " + negotiate.Scheme + "\r\n")
	}
	if r.contentType != "" {
		w.WriteString("Content-Type: ")
		w.WriteString(r.contentType)
		w.WriteString("\r\n")
	}
	w.WriteString("Server: ")
	w.WriteString(r.server)
	w.WriteString("\r\n")
	if closing {
		// The last answer on a connection comes chunked: MeshCentral
		// ignores the body of a "Connection: close" answer framed by
		// Content-Length, and read the commit's as failed (601).
		w.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		if len(r.body) > 0 {
			w.WriteString(strconv.FormatInt(int64(len(r.body)), 16))
			w.WriteString("\r\n")
			w.Write(r.body)
			w.WriteString("\r\n")
		}
		w.WriteString("0\r\n\r\n")
		return w.Flush()
	}
	w.WriteString("Content-Length: ")
	w.WriteString(strconv.Itoa(len(r.body)))
	w.WriteString("\r\n\r\n")
	w.Write(r.body)
	return w.Flush()
}

// handle authenticates a request and routes it.
func (d *Device) handle(sess *session, req *request) response {
	cur := d.current()
	if negotiate.IsNegotiate(req.authorization) {
		user, admin, realms, err := d.acceptTicket(&cur, req.authorization)
		if err != nil {
			d.Stats.AuthFailures.Add(1)
			d.Stats.NegotiateFailures.Add(1)
			d.emit(event.AuthFailed, "peer", sess.peer, "scheme", "negotiate", "user", user, "reason", err.Error())
			return d.challengeFor(&cur, false)
		}
		d.login(sess, user, admin, realms, cur)
		return d.route(sess, req, cur)
	}
	var auth *digest.Authorization
	if h := req.authorization; h != "" {
		a, err := digest.ParseAuthorization(h)
		if err != nil {
			d.Stats.AuthFailures.Add(1)
			d.emit(event.AuthFailed, "peer", sess.peer, "reason", err.Error())
			return d.challengeFor(&cur, false)
		}
		auth = a
	}
	var admin bool
	var realms []uint32
	err := d.digest.Verify(auth, req.method, req.target, func(user string) ([]byte, bool) {
		ha1, isAdmin, rs, ok := lookupUser(&cur, d.realm, user, sess.pki != nil)
		admin, realms = isAdmin, rs
		return ha1, ok
	})
	if err != nil {
		if auth != nil {
			d.Stats.AuthFailures.Add(1)
			d.emit(event.AuthFailed, "peer", sess.peer, "user", auth.Username, "reason", err.Error())
		}
		r := d.challengeFor(&cur, errors.Is(err, digest.ErrStale))
		// While logins are blocked the connection is not kept for more
		// guesses.
		r.close = errors.Is(err, digest.ErrLocked)
		return r
	}
	d.login(sess, auth.Username, admin, realms, cur)
	return d.route(sess, req, cur)
}

// route serves an authenticated request.
func (d *Device) route(sess *session, req *request, cur mebx.Settings) response {
	switch {
	case req.path == "/wsman" && req.method == http.MethodPost:
		if f, h, ok := d.faultFor(req.body); ok {
			return d.serveFaulted(sess, req, f, h)
		}
		// The answer is written into the session's buffer, which is free
		// again once it has gone out.
		out := sess.answerBuffer()
		r := response{status: http.StatusOK, contentType: wsman.ContentType}
		if sess.wsman().ServeTo(out, req.body) {
			r.status = http.StatusBadRequest
		}
		r.body = out.Bytes()
		// The quirk: the committed session's answer never leaves.
		r.drop = sess.committed && d.o.Quirks.CommitDropsConnection
		return r
	case req.method == http.MethodPost && d.prof.EOI && eoi.ServiceAt(req.path) != "":
		code, out := d.serveEOI(sess, req.path, req.body)
		return response{status: code, contentType: "text/xml; charset=utf-8", body: out}
	case req.method == http.MethodGet && (req.path == "/" || req.path == "/index.htm"):
		return response{status: http.StatusOK, contentType: "text/html", body: d.indexPage(cur)}
	}
	return response{status: http.StatusNotFound, contentType: "text/html", body: []byte("<html><body>Not Found</body></html>")}
}

func (d *Device) challenge(stale bool) response {
	ch, err := d.digest.Challenge(stale)
	if err != nil {
		return response{status: http.StatusInternalServerError}
	}
	return response{status: http.StatusUnauthorized, authenticate: ch.String(), contentType: "text/html",
		body: []byte("<html><body>Unauthorized</body></html>")}
}

// challengeFor is the 401 for settings s: Digest always, and Negotiate
// beside it once Kerberos is enabled.
func (d *Device) challengeFor(s *mebx.Settings, stale bool) response {
	r := d.challenge(stale)
	r.negotiate = s.AMT.KerberosEnabled && r.status == http.StatusUnauthorized
	return r
}

// login records the session's user once; an admin in setup holds the
// Hello loop while the session lasts.
func (d *Device) login(sess *session, user string, admin bool, realms []uint32, cur mebx.Settings) {
	sess.mu.Lock()
	first := sess.user == ""
	sess.user, sess.admin, sess.realms = user, admin, realms
	hold := first && admin && sess.inSetup(&cur)
	sess.holding = sess.holding || hold
	sess.mu.Unlock()
	if !first {
		return
	}
	d.emit(event.SessionLogin, "session", sess.id, "port", sess.port, "peer", sess.peer, "user", user, "tls", sess.tls)
	if hold {
		d.holdHello(true)
	}
}

// endSession runs when a connection is done: staged changes that were
// never committed are dropped, a held Hello loop resumes, and what the
// session asked for afterwards (re-arming after commit) runs.
func (d *Device) endSession(sess *session) {
	sess.mu.Lock()
	dropped := sess.staged != nil && !sess.committed
	holding, after, n := sess.holding, sess.after, sess.changes
	sess.staged, sess.holding, sess.after = nil, false, nil
	sess.mu.Unlock()
	if dropped {
		d.emit(event.SessionDiscard, "session", sess.id, "changes", n, "reason", "connection closed before CommitChanges")
	}
	if sess.user != "" {
		d.emit(event.SessionClosed, "session", sess.id, "committed", sess.committed)
	}
	if after != nil {
		after()
	}
	if holding {
		d.holdHello(false)
	}
}

func (s *session) wsman() *wsman.Server {
	if s.ws == nil {
		s.ws = &wsman.Server{Handler: &wsmanHandler{s: s}, OnMalformed: func(err error) {
			s.d.Stats.BadRequests.Add(1)
			s.d.emit(event.WSMANMalformed, "session", s.id, "err", err.Error())
		}}
	}
	return s.ws
}

func (d *Device) indexPage(s mebx.Settings) []byte {
	var b bytes.Buffer
	b.WriteString("<html><head><title>Intel&reg; Active Management Technology</title></head><body>")
	fmt.Fprintf(&b, "<h1>Intel&reg; Active Management Technology</h1><p>Computer: %s</p><p>Provisioning state: %s</p>",
		strings.ReplaceAll(s.HostName, "<", "&lt;"), s.State)
	b.WriteString("</body></html>")
	return b.Bytes()
}
