// The lab's client-go cell (hasim/lab/clientgo.py): Go's real HTTP/2 stack on both ends
// of a long watch that runs through the real nginx or HAProxy.
//
//	clientgo serve -addr 127.0.1.1:6443 -name master1 -cert c.pem -key k.pem
//	clientgo client -url https://127.0.0.1:6443 -read-idle 3s -ping 2s [-beat 1s]
//
// serve: a stub apiserver speaking HTTP/2 over TLS (net/http negotiates h2 by ALPN, as
// kube-apiserver's own server does). GET /watch sends its headers and then nothing until
// the client goes away, an idle watch; GET /lease answers at once. Both name the backend
// in the X-Backend header; GET /healthz answers ok (HAProxy's check).
//
// client: one http.Client whose transport is configured as client-go configures its own
// (k8s.io/apimachinery/pkg/util/net SetTransportDefaults and client-go's dialer: TLS
// handshake timeout 10 s, idle connections 90 s, dial timeout 30 s, TCP keepalive 30 s,
// then golang.org/x/net/http2 ConfigureTransports with ReadIdleTimeout and PingTimeout,
// the HTTP/2 health check of k8s PR #95981). It holds a watch, opens it again at once
// when it ends, and with -beat also sends a /lease request every beat (waiting that long
// after each answer, as the kubelet's lease loop does), each with -beat-timeout. Every
// request shares the one HTTP/2 connection, as a client-go process's requests do.
//
// It prints one JSON object per line: what happened, when (Unix seconds), on which
// connection (its local port) and backend.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

var (
	outMu sync.Mutex
	out   = json.NewEncoder(os.Stdout)
)

func emit(ev map[string]any) {
	outMu.Lock()
	defer outMu.Unlock()
	_ = out.Encode(ev)
}

func now() float64 { return float64(time.Now().UnixNano()) / 1e9 }

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", "127.0.1.1:6443", "listen address")
	name := fs.String("name", "master1", "the backend's name, sent in X-Backend")
	cert := fs.String("cert", "", "TLS certificate (PEM)")
	key := fs.String("key", "", "TLS key (PEM)")
	_ = fs.Parse(args)
	mux := http.NewServeMux()
	mux.HandleFunc("/watch", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", *name)
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // an idle watch: no event until the client leaves
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok") // HAProxy's httpchk
	})
	mux.HandleFunc("/lease", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", *name)
		_, _ = io.WriteString(w, *name)
	})
	srv := &http.Server{Addr: *addr, Handler: mux}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	emit(map[string]any{"ev": "listening", "t": now(), "backend": *name})
	if err := srv.ServeTLS(ln, *cert, *key); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// trace logs every connection the transport dials, with its local port, and which
// connection each request got.
func trace(ctx context.Context, kind string, port *int) context.Context {
	var dialStart float64
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		ConnectStart: func(network, addr string) { dialStart = now() },
		GotConn: func(info httptrace.GotConnInfo) {
			p := info.Conn.LocalAddr().(*net.TCPAddr).Port
			*port = p
			if !info.Reused {
				emit(map[string]any{"ev": "conn", "t": now(), "dial_start": dialStart,
					"port": p, "for": kind})
			}
		},
	})
}

func client(args []string) {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	url := fs.String("url", "https://127.0.0.1:6443", "the load balancer")
	readIdle := fs.Duration("read-idle", 30*time.Second, "http2 ReadIdleTimeout")
	pingTimeout := fs.Duration("ping", 15*time.Second, "http2 PingTimeout")
	beat := fs.Duration("beat", 0, "a /lease request every beat (0: none)")
	beatTimeout := fs.Duration("beat-timeout", 10*time.Second, "each /lease request's timeout")
	_ = fs.Parse(args)

	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 25,
		// The lab's stubs have a self-signed certificate; verifying it costs nothing the
		// cell measures, and everything stays on loopback.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}},
	}
	t2, err := http2.ConfigureTransports(t)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	t2.ReadIdleTimeout = *readIdle
	t2.PingTimeout = *pingTimeout
	c := &http.Client{Transport: t}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	emit(map[string]any{"ev": "start", "t": now()})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); watchLoop(ctx, c, *url) }()
	if *beat > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); beatLoop(ctx, c, *url, *beat, *beatTimeout) }()
	}
	wg.Wait()
}

func watchLoop(ctx context.Context, c *http.Client, url string) {
	for ctx.Err() == nil {
		port := 0
		start := now()
		req, _ := http.NewRequestWithContext(trace(ctx, "watch", &port), "GET", url+"/watch", nil)
		resp, err := c.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				emit(map[string]any{"ev": "watch-failed", "t": now(), "start": start,
					"err": err.Error(), "port": port})
				time.Sleep(10 * time.Millisecond) // a dial refused at once: do not spin
			}
			continue
		}
		emit(map[string]any{"ev": "watch-open", "t": now(), "start": start,
			"backend": resp.Header.Get("X-Backend"), "port": port, "proto": resp.Proto})
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if ctx.Err() != nil {
			return
		}
		msg := "EOF"
		if err != nil {
			msg = err.Error()
		}
		emit(map[string]any{"ev": "watch-lost", "t": now(), "err": msg, "port": port,
			"backend": resp.Header.Get("X-Backend")})
	}
}

func beatLoop(ctx context.Context, c *http.Client, url string, beat, timeout time.Duration) {
	for ctx.Err() == nil {
		port := 0
		start := now()
		rctx, cancel := context.WithTimeout(trace(ctx, "lease", &port), timeout)
		req, _ := http.NewRequestWithContext(rctx, "GET", url+"/lease", nil)
		resp, err := c.Do(req)
		ev := map[string]any{"ev": "beat", "start": start, "port": port}
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			ev["backend"] = resp.Header.Get("X-Backend")
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		ev["t"] = now()
		if err != nil {
			ev["err"] = err.Error()
		}
		emit(ev)
		select {
		case <-ctx.Done():
			return
		case <-time.After(beat):
		}
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: clientgo serve|client [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "client":
		client(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "usage: clientgo serve|client [flags]")
		os.Exit(2)
	}
}
