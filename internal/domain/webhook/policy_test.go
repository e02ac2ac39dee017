package webhook_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/internal/domain/webhook"
)

func TestValidateURL(t *testing.T) {
	public := webhook.Policy{Resolver: fakeResolver("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")}
	toLoopback := webhook.Policy{Resolver: fakeResolver("127.0.0.1")}
	mixed := webhook.Policy{Resolver: fakeResolver("93.184.216.34", "10.1.2.3")}
	metadataV6 := webhook.Policy{Resolver: fakeResolver("fd00:ec2::254")}
	nowhere := webhook.Policy{Resolver: fakeResolver()}
	long := "https://93.184.216.34/" + strings.Repeat("a", 2048)
	cases := []struct {
		name   string
		url    string
		policy webhook.Policy
		reason string // substring of the URLError reason; "" means valid
	}{
		{"public IPv4", "https://93.184.216.34/hook", public, ""},
		{"public IPv6", "https://[2606:2800:220:1:248:1893:25c8:1946]:8443/hook?x=1", public, ""},
		{"public host name", "https://hooks.example.com/in", public, ""},
		{"loopback", "https://127.0.0.1/", public, "loopback"},
		{"loopback other", "https://127.3.4.5:8443/", public, "loopback"},
		{"10/8", "https://10.0.0.1/", public, "private"},
		{"172.16/12", "https://172.16.0.1/", public, "private"},
		{"172.31", "https://172.31.255.255/", public, "private"},
		{"192.168/16", "https://192.168.1.1/", public, "private"},
		{"metadata", "https://169.254.169.254/latest/meta-data", public, "metadata"},
		{"link-local v4", "https://169.254.1.1/", public, "link-local"},
		{"::1", "https://[::1]/", public, "loopback"},
		{"fe80::1", "https://[fe80::1]/", public, "link-local"},
		{"fe80::1 with zone", "https://[fe80::1%25eth0]/", public, "link-local"},
		{"fc00::1", "https://[fc00::1]/", public, "private"},
		{"fd00::1", "https://[fd00::1]/", public, "private"},
		{"ec2 metadata v6", "https://[fd00:ec2::254]/", public, "metadata"},
		{"IPv4-mapped loopback", "https://[::ffff:127.0.0.1]/", public, "loopback"},
		{"CGNAT", "https://100.64.0.1/", public, "carrier-grade NAT"},
		{"0.0.0.0", "https://0.0.0.0/", public, "unspecified"},
		{"::", "https://[::]/", public, "unspecified"},
		{"multicast", "https://224.0.0.1/", public, "multicast"},
		{"broadcast", "https://255.255.255.255/", public, "reserved"},
		{"decimal IPv4", "https://2130706433/", public, "not a valid host"},
		{"hex IPv4", "https://0x7f.1/", public, "not a valid host"},
		{"http without AllowHTTP", "http://93.184.216.34/", public, "https"},
		{"other scheme", "ftp://93.184.216.34/", public, "https"},
		{"javascript", "javascript:alert(1)", public, "absolute"},
		{"userinfo", "https://user:pass@93.184.216.34/", public, "user name"},
		{"user only", "https://user@93.184.216.34/", public, "user name"},
		{"relative", "/hooks/in", public, "absolute"},
		{"no scheme", "93.184.216.34/hook", public, "absolute"},
		{"empty", "", public, "required"},
		{"too long", long, public, "longer than 2048"},
		{"bad port", "https://93.184.216.34:99999/", public, "port"},
		{"name resolving to loopback", "https://internal.example.com/", toLoopback, "loopback"},
		{"one of several addresses private", "https://mixed.example.com/", mixed, "private"},
		{"name resolving to v6 metadata", "https://md.example.com/", metadataV6, "metadata"},
		{"name not resolving", "https://nowhere.example.com/", nowhere, "does not resolve"},
		{"localhost", "https://localhost:8443/", webhook.Policy{}, "loopback"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := webhook.ValidateURL(context.Background(), tc.url, tc.policy)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("ValidateURL(%q) = %v, want valid", tc.url, err)
				}
				return
			}
			var ue *webhook.URLError
			if !errors.As(err, &ue) {
				t.Fatalf("ValidateURL(%q) = %v, want a *URLError", tc.url, err)
			}
			if !strings.Contains(ue.Reason, tc.reason) {
				t.Fatalf("ValidateURL(%q) reason %q, want it to mention %q", tc.url, ue.Reason, tc.reason)
			}
			if strings.Contains(ue.Reason, "10.1.2.3") || strings.Contains(ue.Reason, "127.0.0.1") && !strings.Contains(tc.url, "127.0.0.1") {
				t.Fatalf("reason %q reveals a resolved address", ue.Reason)
			}
		})
	}
}

func TestValidateURLAllowPrivate(t *testing.T) {
	cases := []struct {
		url    string
		policy webhook.Policy
		ok     bool
	}{
		{"http://127.0.0.1:8080/hook", webhook.Policy{AllowPrivate: true, AllowHTTP: true}, true},
		{"http://localhost:8080/hook", webhook.Policy{AllowPrivate: true, AllowHTTP: true}, true},
		{"https://10.0.0.1/hook", webhook.Policy{AllowPrivate: true}, true},
		{"http://10.0.0.1/hook", webhook.Policy{AllowPrivate: true}, false}, // still https only
		{"https://u:p@10.0.0.1/hook", webhook.Policy{AllowPrivate: true}, false},
	}
	for _, tc := range cases {
		err := webhook.ValidateURL(context.Background(), tc.url, tc.policy)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateURL(%q, %+v) = %v, want ok=%v", tc.url, tc.policy, err, tc.ok)
		}
	}
}

func TestBlockedReason(t *testing.T) {
	cases := map[string]string{
		"93.184.216.34":    "",
		"8.8.8.8":          "",
		"2606:4700::1111":  "",
		"127.0.0.1":        "a loopback",
		"10.255.0.1":       "a private",
		"172.15.0.1":       "",
		"172.32.0.1":       "",
		"100.63.255.255":   "",
		"100.127.255.255":  "a carrier-grade NAT",
		"169.254.169.254":  "a cloud metadata",
		"::ffff:10.0.0.1":  "a private",
		"64:ff9b::7f00:1":  "a loopback", // NAT64 of 127.0.0.1
		"64:ff9b::808:808": "",           // NAT64 of 8.8.8.8
		"2002:a00:1::1":    "a private",  // 6to4 of 10.0.0.1
		"::127.0.0.1":      "a reserved", // IPv4-compatible
		"ff02::1":          "a multicast",
		"fd00:ec2::254":    "a cloud metadata",
		"fe80::1":          "a link-local",
		"0.1.2.3":          "an unspecified",
		"192.0.0.170":      "a reserved",
		"198.18.0.1":       "a reserved",
	}
	for ip, want := range cases {
		if got := webhook.BlockedReason(ip); got != want {
			t.Errorf("BlockedReason(%s) = %q, want %q", ip, got, want)
		}
	}
}

// The delivery client refuses to connect to an internal address even when the URL
// passed validation with another answer (DNS rebinding): the check is on the address
// actually dialed.
func TestHTTPClientRefusesPrivateAtConnect(t *testing.T) {
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++ }))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	port := u.Port()
	cases := []struct {
		name string
		url  string
		p    webhook.Policy
	}{
		{"loopback IP", srv.URL, webhook.Policy{AllowHTTP: true}},
		{"localhost", "http://localhost:" + port + "/", webhook.Policy{AllowHTTP: true}},
		{"name rebound to loopback", "http://rebind.example.com:" + port + "/", webhook.Policy{AllowHTTP: true, Resolver: fakeResolver("127.0.0.1")}},
		{"name rebound to IPv4-mapped loopback", "http://rebind6.example.com:" + port + "/", webhook.Policy{AllowHTTP: true, Resolver: fakeResolver("::ffff:127.0.0.1")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := webhook.NewHTTPClient(tc.p)
			resp, err := c.Post(tc.url, "application/json", strings.NewReader("{}"))
			if err == nil {
				resp.Body.Close()
				t.Fatal("request to loopback succeeded")
			}
			var ue *webhook.URLError
			if !errors.As(err, &ue) || !strings.Contains(ue.Reason, "refused by policy") {
				t.Fatalf("error %v, want a policy refusal", err)
			}
		})
	}
	if hits != 0 {
		t.Fatalf("server got %d requests", hits)
	}
	// With AllowPrivate the same client connects.
	resp, err := webhook.NewHTTPClient(webhook.Policy{AllowPrivate: true, AllowHTTP: true}).Get(srv.URL)
	if err != nil {
		t.Fatalf("AllowPrivate client: %v", err)
	}
	resp.Body.Close()
}

func TestHTTPClientNoRedirectsNoProxy(t *testing.T) {
	target := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/target" {
			target++
			return
		}
		http.Redirect(w, r, "/target", http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	c := webhook.NewHTTPClient(localPolicy)
	resp, err := c.Post(srv.URL+"/hook", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || target != 0 {
		t.Fatalf("status %d, target hits %d: redirect was followed", resp.StatusCode, target)
	}
	tr, ok := c.Transport.(*http.Transport)
	if !ok || tr.Proxy != nil {
		t.Fatal("delivery transport uses a proxy setting")
	}
	if c.Timeout != webhook.DefaultTimeout {
		t.Fatalf("client timeout %v, want %v", c.Timeout, webhook.DefaultTimeout)
	}
}
