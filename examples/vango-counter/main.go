// vango-counter: a small server that behaves like Vango's standard template (a counter with session state), for
// hosting on Rhone. It serves a page; the page opens a live WebSocket at /_vango/live, accepted only when its Origin
// matches the Host it was sent to; the server assigns a session id in its first message (the browser keeps it in
// sessionStorage) and, when the browser reconnects with a known id, resumes that session. Sessions live in Redis
// when RHONE_SERVICE_SESSION_URL is bound (so they survive a release and are shared by every instance), in memory
// otherwise; clicks on every instance reach every page through RHONE_SERVICE_BROADCAST_URL (Redis pub/sub).
package main

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

//go:embed page.html
var page []byte

//go:embed VERSION
var version string

const sessionTTL = "86400"
const broadcastChannel = "vango:broadcast"

type app struct {
	instance  string
	sessions  *redisClient // nil: sessions in memory only
	broadcast *redisClient
	mu        sync.Mutex
	memory    map[string]int64 // sessions without a store, and the last known count of each
	sockets   map[*wsConn]bool
	total     int64
}

type message struct {
	Type     string `json:"type"`
	Session  string `json:"session,omitempty"`
	Count    int64  `json:"count"`
	Total    int64  `json:"total"`
	Resumed  bool   `json:"resumed,omitempty"`
	Instance string `json:"instance,omitempty"`
	Version  string `json:"version,omitempty"`
	Store    string `json:"store,omitempty"`
	From     string `json:"from,omitempty"`
}

func newSessionID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// sameOrigin is Vango's check: the Origin's host must be the Host the request was sent to (a proxy in front must
// pass Host through). No Origin (a non-browser client) is allowed, as gorilla/websocket does.
func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

// load returns the session's count and whether the store was reachable.
func (a *app) load(id string) (int64, bool, string) {
	a.mu.Lock()
	local, known := a.memory[id]
	a.mu.Unlock()
	if a.sessions == nil {
		return local, known, "memory"
	}
	reply, err := a.sessions.Do("GET", "vango:session:"+id)
	if err != nil {
		log.Printf("session store unavailable: %v", err)
		return local, known, "unavailable"
	}
	if text, ok := reply.(string); ok {
		n, _ := strconv.ParseInt(text, 10, 64)
		return n, true, "redis"
	}
	return local, known, "redis"
}

// save keeps the count in memory and, when bound, in the session store; it says where it was kept.
func (a *app) save(id string, count int64) string {
	a.mu.Lock()
	a.memory[id] = count
	a.mu.Unlock()
	if a.sessions == nil {
		return "memory"
	}
	if _, err := a.sessions.Do("SET", "vango:session:"+id, strconv.FormatInt(count, 10), "EX", sessionTTL); err != nil {
		log.Printf("session store unavailable: %v", err)
		return "unavailable" // the page says so: this count lives in this instance only until the store is back
	}
	return "redis"
}

func (a *app) clicked() {
	if a.broadcast == nil {
		a.mu.Lock()
		a.total++
		total := a.total
		a.mu.Unlock()
		a.send(message{Type: "total", Total: total, From: a.instance})
		return
	}
	reply, err := a.broadcast.Do("INCR", "vango:total")
	if err != nil {
		log.Printf("broadcast unavailable: %v", err)
		return
	}
	total, _ := reply.(int64)
	event, _ := json.Marshal(message{Type: "total", Total: total, From: a.instance})
	if _, err := a.broadcast.Do("PUBLISH", broadcastChannel, string(event)); err != nil {
		log.Printf("broadcast unavailable: %v", err)
	}
}

// openSockets is every live WebSocket of this instance, copied so that none is written to under the lock.
func (a *app) openSockets() []*wsConn {
	a.mu.Lock()
	defer a.mu.Unlock()
	sockets := make([]*wsConn, 0, len(a.sockets))
	for s := range a.sockets {
		sockets = append(sockets, s)
	}
	return sockets
}

func (a *app) send(m message) {
	data, _ := json.Marshal(m)
	for _, s := range a.openSockets() {
		s.WriteText(data)
	}
}

func (a *app) live(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	ws, err := upgrade(w, r)
	if err != nil {
		return
	}
	a.mu.Lock()
	a.sockets[ws] = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.sockets, ws)
		a.mu.Unlock()
		ws.Close(1000, "")
	}()
	var session string
	var count int64
	for {
		data, err := ws.ReadText()
		if err != nil {
			return
		}
		var in message
		if json.Unmarshal(data, &in) != nil {
			continue
		}
		var out message
		switch {
		case in.Type == "hello":
			resumed := false
			store := "memory"
			if in.Session != "" && len(in.Session) <= 64 {
				var known bool
				count, known, store = a.load(in.Session)
				if known {
					session, resumed = in.Session, true
				}
			}
			if session == "" {
				session, count = newSessionID(), 0
				store = a.save(session, 0)
			}
			out = message{Type: "session", Session: session, Count: count, Resumed: resumed, Store: store}
		case in.Type == "inc" && session != "":
			count++
			out = message{Type: "count", Session: session, Count: count, Store: a.save(session, count)}
			go a.clicked()
		default:
			continue
		}
		out.Instance, out.Version = a.instance, strings.TrimSpace(version)
		reply, _ := json.Marshal(out)
		if ws.WriteText(reply) != nil {
			return
		}
	}
}

func main() {
	a := &app{instance: os.Getenv("RHONE_ALLOCATION_ID"), memory: map[string]int64{}, sockets: map[*wsConn]bool{}}
	if a.instance == "" {
		a.instance = "local"
	}
	if raw := os.Getenv("RHONE_SERVICE_SESSION_URL"); strings.HasPrefix(raw, "redis://") {
		client, err := newRedisClient(raw)
		if err != nil {
			log.Fatalf("RHONE_SERVICE_SESSION_URL: %v", err)
		}
		a.sessions = client
	}
	if raw := os.Getenv("RHONE_SERVICE_BROADCAST_URL"); strings.HasPrefix(raw, "redis://") {
		client, err := newRedisClient(raw)
		if err != nil {
			log.Fatalf("RHONE_SERVICE_BROADCAST_URL: %v", err)
		}
		a.broadcast = client
		subscriber, _ := newRedisClient(raw)
		go subscriber.Subscribe(broadcastChannel, func(event string) {
			var m message
			if json.Unmarshal([]byte(event), &m) == nil {
				a.send(m)
			}
		})
	}
	log.Printf("vango-counter %s on instance %s: sessions in %s", strings.TrimSpace(version), a.instance,
		map[bool]string{true: "redis", false: "memory"}[a.sessions != nil])

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/_vango/live", a.live)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	server := &http.Server{Addr: "127.0.0.1:" + port, Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	// SIGTERM (the end of a drain): live sockets are told to go away (1001), so browsers reconnect to the instance
	// that serves now and resume their sessions from the store.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		for _, s := range a.openSockets() {
			s.Close(1001, "going away")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		server.Shutdown(ctx)
	}()
	if err := server.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
