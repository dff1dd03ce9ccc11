package main

// A minimal Redis client (RESP2): one connection for commands, reconnected after any error, and a subscriber loop.
// It reads everything it needs from a standard URL, redis://user:password@host:port/db, which is how a Vango app
// builds its session store's client (see README.md).

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

type redisClient struct {
	addr, user, password string
	db                   int
	mu                   sync.Mutex
	conn                 net.Conn
	reader               *bufio.Reader
}

func newRedisClient(raw string) (*redisClient, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "redis" {
		return nil, fmt.Errorf("not a redis:// URL")
	}
	c := &redisClient{addr: u.Host}
	if u.User != nil {
		c.user = u.User.Username()
		c.password, _ = u.User.Password()
	}
	if path := strings.Trim(u.Path, "/"); path != "" {
		if c.db, err = strconv.Atoi(path); err != nil {
			return nil, fmt.Errorf("database %q is not a number", path)
		}
	}
	return c, nil
}

func writeCommand(conn net.Conn, args ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_, err := conn.Write([]byte(b.String()))
	return err
}

// readReply returns a string, an int64, nil, or a []any; a Redis error reply is an error.
func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return nil, errors.New(line[1:])
	case ':':
		return strconv.ParseInt(line[1:], 10, 64)
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := ioReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, _ := strconv.Atoi(line[1:])
		items := make([]any, 0, max(n, 0))
		for i := 0; i < n; i++ {
			item, err := readReply(r)
			if err != nil {
				return nil, err
			}
			items = append(items, item)
		}
		return items, nil
	}
	return nil, fmt.Errorf("unexpected reply %q", line)
}

func ioReadFull(r *bufio.Reader, buf []byte) (int, error) {
	read := 0
	for read < len(buf) {
		n, err := r.Read(buf[read:])
		read += n
		if err != nil {
			return read, err
		}
	}
	return read, nil
}

// dial connects, authenticates and selects the database.
func (c *redisClient) dial() (net.Conn, *bufio.Reader, error) {
	conn, err := net.DialTimeout("tcp", c.addr, 2*time.Second)
	if err != nil {
		return nil, nil, err
	}
	reader := bufio.NewReader(conn)
	setup := [][]string{}
	if c.password != "" {
		if c.user != "" {
			setup = append(setup, []string{"AUTH", c.user, c.password})
		} else {
			setup = append(setup, []string{"AUTH", c.password})
		}
	}
	if c.db != 0 {
		setup = append(setup, []string{"SELECT", strconv.Itoa(c.db)})
	}
	for _, cmd := range setup {
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if err := writeCommand(conn, cmd...); err != nil {
			conn.Close()
			return nil, nil, err
		}
		if _, err := readReply(reader); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	return conn, reader, nil
}

// Do runs one command; after any error the connection is dropped, and the next call dials again.
func (c *redisClient) Do(args ...string) (any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		conn, reader, err := c.dial()
		if err != nil {
			return nil, err
		}
		c.conn, c.reader = conn, reader
	}
	c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if err := writeCommand(c.conn, args...); err != nil {
		c.drop()
		return nil, err
	}
	reply, err := readReply(c.reader)
	if err != nil {
		if _, isNet := err.(net.Error); isNet || err.Error() == "EOF" || strings.Contains(err.Error(), "closed") {
			c.drop()
		}
		return nil, err
	}
	return reply, nil
}

func (c *redisClient) drop() {
	if c.conn != nil {
		c.conn.Close()
	}
	c.conn, c.reader = nil, nil
}

// Subscribe calls onMessage for every message on channel, reconnecting (every second) for as long as the process
// lives.
func (c *redisClient) Subscribe(channel string, onMessage func(string)) {
	for {
		conn, reader, err := c.dial()
		if err == nil {
			conn.SetReadDeadline(time.Time{})
			if err = writeCommand(conn, "SUBSCRIBE", channel); err == nil {
				for {
					reply, rerr := readReply(reader)
					if rerr != nil {
						break
					}
					if items, ok := reply.([]any); ok && len(items) == 3 && items[0] == "message" {
						if text, ok := items[2].(string); ok {
							onMessage(text)
						}
					}
				}
			}
			conn.Close()
		}
		time.Sleep(time.Second)
	}
}
