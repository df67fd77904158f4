package probe_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"upwatch.dev/services/checker/probe"
	"upwatch.dev/shared/monitor"
)

func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestProbe(t *testing.T) {
	t.Parallel()
	p := probe.New()
	ctx := context.Background()
	status := func(code int) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
	}
	httpSettings := func(h *monitor.HTTPSettings) monitor.Settings { return monitor.Settings{HTTP: h} }

	t.Run("HTTPUp", func(t *testing.T) {
		srv := httptest.NewServer(status(http.StatusNoContent))
		defer srv.Close()
		out := p.Run(ctx, "http", srv.URL, monitor.Settings{}, time.Second)
		require.True(t, out.Up, out.Error)
		require.Equal(t, 204, out.StatusCode)
		require.Positive(t, out.Latency)
	})

	t.Run("HTTPExpectedStatusAndMethod", func(t *testing.T) {
		var method string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			method = r.Method
			w.WriteHeader(http.StatusTeapot)
		}))
		defer srv.Close()
		out := p.Run(ctx, "http", srv.URL, httpSettings(&monitor.HTTPSettings{Method: "HEAD", ExpectedStatus: []int{418}}), time.Second)
		require.True(t, out.Up, out.Error)
		require.Equal(t, "HEAD", method)
		out = p.Run(ctx, "http", srv.URL, httpSettings(&monitor.HTTPSettings{ExpectedStatus: []int{200, 204}}), time.Second)
		require.False(t, out.Up)
		require.Equal(t, "unexpected status 418 (expected 200, 204)", out.Error)
	})

	t.Run("HTTPServerError", func(t *testing.T) {
		srv := httptest.NewServer(status(http.StatusInternalServerError))
		defer srv.Close()
		out := p.Run(ctx, "http", srv.URL, monitor.Settings{}, time.Second)
		require.False(t, out.Up)
		require.Equal(t, 500, out.StatusCode)
		require.Equal(t, "unexpected status 500 (expected 2xx)", out.Error)
	})

	t.Run("HTTPTimeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer srv.Close()
		defer close(release)
		out := p.Run(ctx, "http", srv.URL, monitor.Settings{}, 200*time.Millisecond)
		require.False(t, out.Up)
		require.Equal(t, "timeout after 200ms", out.Error)
		require.Less(t, out.Latency, 2*time.Second)
	})

	t.Run("HTTPRefused", func(t *testing.T) {
		out := p.Run(ctx, "http", "http://"+closedPort(t)+"/", monitor.Settings{}, time.Second)
		require.False(t, out.Up)
		require.Equal(t, "connection refused", out.Error)
	})

	t.Run("TLSUnknownAuthority", func(t *testing.T) {
		srv := httptest.NewTLSServer(status(http.StatusOK))
		defer srv.Close()
		out := p.Run(ctx, "http", srv.URL, monitor.Settings{}, time.Second)
		require.False(t, out.Up)
		require.Equal(t, "tls: certificate signed by unknown authority", out.Error)
		// Unless the monitor accepts any certificate.
		out = p.Run(ctx, "http", srv.URL, httpSettings(&monitor.HTTPSettings{SkipTLSVerify: true}), time.Second)
		require.True(t, out.Up, out.Error)
	})

	t.Run("TLSAgainstPlainHTTP", func(t *testing.T) {
		srv := httptest.NewServer(status(http.StatusOK))
		defer srv.Close()
		out := p.Run(ctx, "http", strings.Replace(srv.URL, "http://", "https://", 1), monitor.Settings{}, time.Second)
		require.False(t, out.Up)
		require.Equal(t, "http: server gave HTTP response to HTTPS client", out.Error)
	})

	t.Run("TCP", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		out := p.Run(ctx, "tcp", ln.Addr().String(), monitor.Settings{}, time.Second)
		require.True(t, out.Up, out.Error)
		out = p.Run(ctx, "tcp", closedPort(t), monitor.Settings{}, time.Second)
		require.False(t, out.Up)
		require.Equal(t, "connection refused", out.Error)
	})
}
