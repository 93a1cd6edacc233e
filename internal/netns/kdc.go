package netns

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amtsim/amtsim/internal/syncbuf"
)

// KDCOptions say what MIT Kerberos's KDC (krb5kdc) serves in a test's
// namespace: a realm of the test's own, created for it.
type KDCOptions struct {
	Realm string // e.g. AMTSIM.TEST
	// Listen is the address the KDC binds, on port 88 (the kernel side of
	// the test's TAP or veth).
	Listen string
	// Domain maps to the realm (domain_realm), so that a client finds the
	// realm of HTTP/host.<domain>.
	Domain string
	// MaxLife caps the tickets the KDC issues; zero is 10 hours.
	MaxLife time.Duration
}

// KDC is a running krb5kdc with its database, and the client
// configuration that reaches it. Everything it writes is under the test's
// temporary directory, which goes with the test; nothing under /etc is
// touched.
type KDC struct {
	ns    *NS
	Realm string
	dir   string
	Log   *syncbuf.Buffer
}

// KDC creates the realm's database (kdb5_util) and runs krb5kdc in the
// namespace until the test ends. It returns once the KDC has started.
func (ns *NS) KDC(t testing.TB, o KDCOptions) *KDC {
	t.Helper()
	Need(t, "krb5kdc")
	if o.MaxLife == 0 {
		o.MaxLife = 10 * time.Hour
	}
	k := &KDC{ns: ns, Realm: o.Realm, dir: t.TempDir(), Log: &syncbuf.Buffer{}}
	life := fmt.Sprintf("%ds", int(o.MaxLife.Seconds()))
	// RC4-HMAC beside AES: AMT 5's service key is RC4-HMAC, which MIT
	// keeps behind allow_rc4 from 1.21 (1.20 takes it as is).
	enctypes := "aes256-cts-hmac-sha1-96 arcfour-hmac"
	kdcConf := fmt.Sprintf(`[kdcdefaults]
	kdc_listen = %[1]s
	kdc_tcp_listen = %[1]s
[realms]
	%[2]s = {
		database_name = %[3]s/principal
		key_stash_file = %[3]s/stash
		acl_file = %[3]s/kadm5.acl
		max_life = %[4]s
		max_renewable_life = 0
		master_key_type = aes256-cts-hmac-sha1-96
		supported_enctypes = aes256-cts-hmac-sha1-96:normal arcfour-hmac:normal
	}
[logging]
	kdc = STDERR
`, o.Listen, o.Realm, k.dir, life)
	krb5Conf := fmt.Sprintf(`[libdefaults]
	default_realm = %[1]s
	dns_lookup_kdc = false
	dns_lookup_realm = false
	dns_canonicalize_hostname = false
	rdns = false
	allow_rc4 = true
	allow_weak_crypto = false
	permitted_enctypes = %[4]s
	default_tkt_enctypes = %[4]s
	default_tgs_enctypes = %[4]s
	udp_preference_limit = 1
[realms]
	%[1]s = {
		kdc = %[2]s:88
	}
[domain_realm]
	.%[3]s = %[1]s
	%[3]s = %[1]s
`, o.Realm, o.Listen, o.Domain, enctypes)
	for name, body := range map[string]string{"kdc.conf": kdcConf, "krb5.conf": krb5Conf, "kadm5.acl": ""} {
		if err := os.WriteFile(filepath.Join(k.dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	master := make([]byte, 16)
	if _, err := rand.Read(master); err != nil {
		t.Fatal(err)
	}
	if out, err := k.Command("kdb5_util", "-r", o.Realm, "create", "-s", "-P", hex.EncodeToString(master)).CombinedOutput(); err != nil {
		t.Fatalf("kdb5_util create %s: %v: %s", o.Realm, err, out)
	}
	cmd := k.Command("krb5kdc", "-n", "-r", o.Realm, "-P", filepath.Join(k.dir, "pid"))
	cmd.Stdout, cmd.Stderr = k.Log, k.Log
	if err := cmd.Start(); err != nil {
		t.Fatalf("krb5kdc in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("krb5kdc:\n%s", k.Log.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(k.Log.String(), "commencing operation") {
		if time.Now().After(deadline) {
			t.Fatalf("krb5kdc did not start:\n%s", k.Log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return k
}

// Env is the environment a Kerberos client in the namespace needs: this
// realm's configuration and a credential cache of its own.
func (k *KDC) Env(ccache string) []string {
	return []string{"KRB5_CONFIG=" + filepath.Join(k.dir, "krb5.conf"), "KRB5_KDC_PROFILE=" + filepath.Join(k.dir, "kdc.conf"),
		"KRB5CCNAME=FILE:" + filepath.Join(k.dir, "ccache-"+ccache)}
}

// Command runs a Kerberos program in the namespace with this realm's
// configuration.
func (k *KDC) Command(args ...string) *exec.Cmd {
	cmd := k.ns.Command(args...)
	cmd.Env = append(os.Environ(), k.Env("admin")...)
	return cmd
}

// AddPrincipal adds name@realm with password's keys of enctypes
// ("arcfour-hmac:normal", or "" for the realm's supported set). The
// password goes to kadmin.local on its standard input, never on a command
// line.
func (k *KDC) AddPrincipal(t testing.TB, name, password, enctypes string) {
	t.Helper()
	q := "addprinc"
	if enctypes != "" {
		q += " -e " + enctypes
	}
	q += " " + name
	cmd := k.Command("kadmin.local", "-r", k.Realm, "-q", q)
	cmd.Stdin = strings.NewReader(password + "\n" + password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "created") {
		t.Fatalf("kadmin.local %s: %v: %s", q, err, out)
	}
}

// Kinit gets a TGT for principal into the cache named ccache (see Env),
// for lifetime (zero: the KDC's maximum).
func (k *KDC) Kinit(t testing.TB, principal, password, ccache string, lifetime time.Duration) {
	t.Helper()
	args := []string{"kinit"}
	if lifetime > 0 {
		args = append(args, "-l", fmt.Sprintf("%ds", int(lifetime.Seconds())))
	}
	cmd := k.ns.Command(append(args, principal)...)
	cmd.Env = append(os.Environ(), k.Env(ccache)...)
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kinit %s: %v: %s\nkrb5kdc:\n%s", principal, err, out, k.Log.String())
	}
}
