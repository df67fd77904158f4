// Package probe runs one check against a target and says whether it is up,
// how long it took and, when it is down, why in words a person can act on.
package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"upwatch.dev/shared/monitor"
)

// Outcome of one check.
type Outcome struct {
	Up         bool
	Latency    time.Duration
	StatusCode int
	Error      string
}

// maxBody is how much of a response body is read: enough to finish small
// responses cleanly, not so much that a large page costs the checker.
const maxBody = 64 << 10

// Prober runs checks. It is safe for concurrent use.
type Prober struct {
	client   *http.Client
	insecure *http.Client
	dialer   net.Dialer
}

// New builds a prober. Every HTTP check opens its own connection, as a
// visitor would: a reused connection would hide a broken listener or TLS
// handshake behind one that still works.
func New() *Prober {
	mk := func(skipVerify bool) *http.Client {
		return &http.Client{
			Transport: &http.Transport{
				Proxy:                  nil,
				DialContext:            (&net.Dialer{KeepAlive: -1}).DialContext,
				DisableKeepAlives:      true,
				DisableCompression:     true,
				TLSClientConfig:        &tls.Config{InsecureSkipVerify: skipVerify}, //nolint:gosec // only when the monitor asks for it
				MaxResponseHeaderBytes: 64 << 10,
				ForceAttemptHTTP2:      false,
			},
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= 10 {
					return errors.New("stopped after 10 redirects")
				}
				return nil
			},
		}
	}
	return &Prober{client: mk(false), insecure: mk(true)}
}

// Run runs the check described by kind, target and settings, within timeout.
func (p *Prober) Run(ctx context.Context, kind, target string, settings monitor.Settings, timeout time.Duration) Outcome {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	var out Outcome
	switch kind {
	case monitor.KindHTTP:
		out = p.http(ctx, target, settings.HTTP)
	case monitor.KindTCP:
		out = p.tcp(ctx, target)
	default:
		out = Outcome{Error: fmt.Sprintf("unknown check kind %q", kind)}
	}
	out.Latency = time.Since(start)
	if !out.Up && ctx.Err() == context.DeadlineExceeded {
		out.Error = fmt.Sprintf("timeout after %s", timeout)
	}
	return out
}

func (p *Prober) http(ctx context.Context, target string, s *monitor.HTTPSettings) Outcome {
	if s == nil {
		s = &monitor.HTTPSettings{}
	}
	method := s.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return Outcome{Error: "bad request: " + err.Error()}
	}
	req.Header.Set("User-Agent", "upwatch")
	for k, v := range s.Headers {
		req.Header.Set(k, v)
	}
	client := p.client
	if s.SkipTLSVerify {
		client = p.insecure
	}
	resp, err := client.Do(req)
	if err != nil {
		return Outcome{Error: describe(err)}
	}
	_, readErr := io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	_ = resp.Body.Close()
	out := Outcome{StatusCode: resp.StatusCode}
	switch {
	case !s.StatusExpected(resp.StatusCode):
		out.Error = fmt.Sprintf("unexpected status %d (expected %s)", resp.StatusCode, expected(s))
	case readErr != nil && ctx.Err() != nil:
		out.Error = describe(readErr)
	default:
		out.Up = true
	}
	return out
}

func expected(s *monitor.HTTPSettings) string {
	if len(s.ExpectedStatus) == 0 {
		return "2xx"
	}
	codes := make([]string, len(s.ExpectedStatus))
	for i, c := range s.ExpectedStatus {
		codes[i] = fmt.Sprint(c)
	}
	return strings.Join(codes, ", ")
}

func (p *Prober) tcp(ctx context.Context, target string) Outcome {
	conn, err := p.dialer.DialContext(ctx, "tcp", target)
	if err != nil {
		return Outcome{Error: describe(err)}
	}
	_ = conn.Close()
	return Outcome{Up: true}
}

// describe turns a network error into a reason a person can act on.
func describe(err error) string {
	var (
		unknownCA   x509.UnknownAuthorityError
		invalidCert x509.CertificateInvalidError
		hostErr     x509.HostnameError
		verifyErr   *tls.CertificateVerificationError
		recordErr   tls.RecordHeaderError
		alertErr    tls.AlertError
		dnsErr      *net.DNSError
	)
	switch {
	case errors.As(err, &invalidCert) && invalidCert.Reason == x509.Expired:
		return "tls: certificate expired or not yet valid: " + invalidCert.Error()
	case errors.As(err, &unknownCA):
		return "tls: certificate signed by unknown authority"
	case errors.As(err, &hostErr):
		return "tls: " + hostErr.Error()
	case errors.As(err, &invalidCert):
		return "tls: invalid certificate: " + invalidCert.Error()
	case errors.As(err, &verifyErr):
		return "tls: certificate verification failed: " + verifyErr.Err.Error()
	case errors.As(err, &recordErr):
		return "tls: server did not answer with TLS (is it plain HTTP?)"
	case errors.As(err, &alertErr):
		return "tls: handshake failed: " + alertErr.Error()
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by peer"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "host unreachable"
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return "dns: no such host " + dnsErr.Name
		}
		return "dns: " + dnsErr.Err
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return urlErr.Err.Error()
	}
	return err.Error()
}
