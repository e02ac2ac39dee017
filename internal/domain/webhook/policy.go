package webhook

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Policy says which webhook URLs are acceptable and where the delivery client may connect.
type Policy struct {
	// AllowPrivate allows loopback, private, link-local and cloud metadata targets
	// (WEBHOOK_ALLOW_PRIVATE; for tests and self-hosted set-ups).
	AllowPrivate bool
	// AllowHTTP allows http:// URLs; by default only https:// is accepted.
	AllowHTTP bool
	// Resolver resolves host names; nil means net.DefaultResolver.
	Resolver *net.Resolver
}

// MaxURLLength is the longest webhook URL accepted.
const MaxURLLength = 2048

// URLError is a webhook URL or connection refused by the policy. Its Reason is safe to
// show to users: it never includes the addresses a host name resolved to.
type URLError struct {
	Reason string
}

func (e *URLError) Error() string { return e.Reason }

func (p Policy) resolver() *net.Resolver {
	if p.Resolver != nil {
		return p.Resolver
	}
	return net.DefaultResolver
}

// ValidateURL checks a webhook URL when it is created or changed: it must be absolute,
// https (or http with AllowHTTP), without user info, at most MaxURLLength characters,
// its host must resolve, and (unless AllowPrivate) none of the resolved addresses may be
// loopback, private (RFC 1918, fc00::/7), link-local (169.254/16, fe80::/10),
// unspecified, multicast, carrier-grade NAT (100.64/10), reserved, or a cloud metadata
// address (169.254.169.254, fd00:ec2::254).
// It returns a *URLError whose Reason is safe to show to users, or ctx's error.
func ValidateURL(ctx context.Context, raw string, p Policy) error {
	if raw == "" {
		return &URLError{Reason: "URL is required"}
	}
	if len(raw) > MaxURLLength {
		return &URLError{Reason: "URL is longer than " + strconv.Itoa(MaxURLLength) + " characters"}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return &URLError{Reason: "URL is not valid"}
	}
	if !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return &URLError{Reason: "URL must be absolute (https://host/path)"}
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if !p.AllowHTTP {
			return &URLError{Reason: "URL must use https"}
		}
	default:
		if p.AllowHTTP {
			return &URLError{Reason: "URL must use https or http"}
		}
		return &URLError{Reason: "URL must use https"}
	}
	if u.User != nil {
		return &URLError{Reason: "URL must not contain a user name or password"}
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return &URLError{Reason: "URL has an invalid port"}
		}
	}
	host := u.Hostname()
	if host == "" {
		return &URLError{Reason: "URL has no host"}
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		if looksNumeric(host) {
			// "0x7f.1", "2130706433": forms some resolvers read as IPv4 addresses.
			return &URLError{Reason: "URL host is not a valid host name or IP address"}
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		addrs, err = p.resolver().LookupNetIP(lctx, "ip", host)
		cancel()
		if err != nil || len(addrs) == 0 {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &URLError{Reason: "URL host does not resolve"}
		}
	}
	if p.AllowPrivate {
		return nil
	}
	for _, a := range addrs {
		if reason := blockedReason(a); reason != "" {
			return &URLError{Reason: "URL host resolves to " + reason + " address, which is not allowed"}
		}
	}
	return nil
}

// looksNumeric reports whether host's last label is numeric or hexadecimal ("0x…"): no
// top-level domain is, but inet_aton-style parsers read such hosts as addresses.
func looksNumeric(host string) bool {
	host = strings.TrimSuffix(host, ".")
	last := host[strings.LastIndexByte(host, '.')+1:]
	if last == "" {
		return false
	}
	if l := strings.ToLower(last); strings.HasPrefix(l, "0x") {
		return true
	}
	for _, c := range last {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

type blockedPrefix struct {
	prefix netip.Prefix
	reason string
}

// blocked lists the refused ranges, most specific first so that the reason names the
// narrowest category (metadata before link-local).
var blocked = func() []blockedPrefix {
	list := []struct{ cidr, reason string }{
		{"169.254.169.254/32", "a cloud metadata"},
		{"fd00:ec2::254/128", "a cloud metadata"},
		{"0.0.0.0/8", "an unspecified"},
		{"10.0.0.0/8", "a private"},
		{"100.64.0.0/10", "a carrier-grade NAT"},
		{"127.0.0.0/8", "a loopback"},
		{"169.254.0.0/16", "a link-local"},
		{"172.16.0.0/12", "a private"},
		{"192.0.0.0/24", "a reserved"},
		{"192.168.0.0/16", "a private"},
		{"198.18.0.0/15", "a reserved"},
		{"224.0.0.0/4", "a multicast"},
		{"240.0.0.0/4", "a reserved"},
		{"::/128", "an unspecified"},
		{"::1/128", "a loopback"},
		{"::/96", "a reserved"}, // IPv4-compatible (deprecated)
		{"100::/64", "a reserved"},
		{"64:ff9b:1::/48", "a private"},
		{"2001::/32", "a reserved"}, // Teredo: embeds an obfuscated IPv4 address
		{"fc00::/7", "a private"},
		{"fe80::/10", "a link-local"},
		{"fec0::/10", "a private"}, // site-local (deprecated)
		{"ff00::/8", "a multicast"},
	}
	out := make([]blockedPrefix, len(list))
	for i, b := range list {
		out[i] = blockedPrefix{netip.MustParsePrefix(b.cidr), b.reason}
	}
	return out
}()

var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
)

// blockedReason returns why a is refused ("a loopback", "a private", …), or "" when
// a is a public unicast address.
func blockedReason(a netip.Addr) string {
	a = a.WithZone("").Unmap()
	if !a.IsValid() {
		return "an invalid"
	}
	if a.Is6() {
		// Addresses that embed an IPv4 address are judged by it.
		b := a.As16()
		switch {
		case nat64.Contains(a):
			return blockedReason(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
		case sixTo4.Contains(a):
			return blockedReason(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
		}
	}
	for _, b := range blocked {
		if b.prefix.Contains(a) {
			return b.reason
		}
	}
	return ""
}

// NewHTTPClient returns the client that delivers webhooks: a 15 s timeout, redirects not
// followed (a 3xx is the attempt's result), proxies from the environment ignored, and,
// unless p.AllowPrivate, a dialer that checks the address actually connected to against
// the rules of ValidateURL, so a host name that resolved to a public address at creation
// and to an internal one now (DNS rebinding) is refused. A refused connection fails the
// request with an error wrapping a *URLError.
func NewHTTPClient(p Policy) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Resolver: p.Resolver}
	if !p.AllowPrivate {
		dialer.Control = func(network, address string, _ syscall.RawConn) error {
			return checkDialAddress(address)
		}
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// checkDialAddress checks an "ip:port" the dialer is about to connect to.
func checkDialAddress(address string) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return &URLError{Reason: "invalid address"}
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return &URLError{Reason: "invalid address"}
	}
	if reason := blockedReason(a); reason != "" {
		return &URLError{Reason: "connection to " + reason + " address refused by policy"}
	}
	return nil
}

// isPolicyError reports whether err is a connection refused by the policy.
func isPolicyError(err error) (*URLError, bool) {
	var ue *URLError
	ok := errors.As(err, &ue)
	return ue, ok
}
