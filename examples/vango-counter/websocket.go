package main

// A minimal WebSocket server side (RFC 6455): the opening handshake, text frames, ping/pong and close. Enough for the
// live channel of this example; a real Vango app uses its framework's implementation.

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
const maxFrame = 1 << 20

type wsConn struct {
	conn   net.Conn
	reader *bufio.Reader
	mu     sync.Mutex // one writer at a time: the handler and the broadcaster both send
	closed bool
}

func headerHas(h http.Header, name, token string) bool {
	for _, value := range h.Values(name) {
		for _, part := range strings.Split(value, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

// upgrade answers the handshake, or an HTTP error when the request is not a WebSocket upgrade.
func upgrade(w http.ResponseWriter, r *http.Request) (*wsConn, error) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if r.Method != http.MethodGet || !headerHas(r.Header, "Connection", "upgrade") ||
		!headerHas(r.Header, "Upgrade", "websocket") || key == "" {
		http.Error(w, "expected a WebSocket upgrade", http.StatusBadRequest)
		return nil, errors.New("not an upgrade")
	}
	hijacker, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot upgrade", http.StatusInternalServerError)
		return nil, errors.New("no hijacker")
	}
	conn, rw, err := hijacker.Hijack()
	if err != nil {
		return nil, err
	}
	sum := sha1.Sum([]byte(key + websocketGUID))
	accept := base64.StdEncoding.EncodeToString(sum[:])
	response := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + accept + "\r\n\r\n"
	if _, err := conn.Write([]byte(response)); err != nil {
		conn.Close()
		return nil, err
	}
	return &wsConn{conn: conn, reader: rw.Reader}, nil
}

func (c *wsConn) writeFrame(opcode byte, payload []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	header := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		header = append(header, byte(n))
	case n < 65536:
		header = append(header, 126, byte(n>>8), byte(n))
	default:
		header = append(header, 127)
		header = binary.BigEndian.AppendUint64(header, uint64(n))
	}
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.conn.Write(append(header, payload...))
	return err
}

func (c *wsConn) WriteText(payload []byte) error { return c.writeFrame(0x1, payload) }

// Close sends a close frame with a status (1001: going away) and closes the connection.
func (c *wsConn) Close(code uint16, reason string) {
	payload := binary.BigEndian.AppendUint16(nil, code)
	c.writeFrame(0x8, append(payload, reason...))
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.conn.Close()
}

// ReadText returns the next text message, answering pings on the way; io.EOF when the client closed.
func (c *wsConn) ReadText() ([]byte, error) {
	for {
		head := make([]byte, 2)
		if _, err := io.ReadFull(c.reader, head); err != nil {
			return nil, err
		}
		opcode, masked := head[0]&0x0f, head[1]&0x80 != 0
		length := uint64(head[1] & 0x7f)
		switch length {
		case 126:
			ext := make([]byte, 2)
			if _, err := io.ReadFull(c.reader, ext); err != nil {
				return nil, err
			}
			length = uint64(binary.BigEndian.Uint16(ext))
		case 127:
			ext := make([]byte, 8)
			if _, err := io.ReadFull(c.reader, ext); err != nil {
				return nil, err
			}
			length = binary.BigEndian.Uint64(ext)
		}
		if length > maxFrame || !masked || head[0]&0x80 == 0 {
			return nil, errors.New("unsupported frame") // clients mask; this example needs no fragments
		}
		mask := make([]byte, 4)
		if _, err := io.ReadFull(c.reader, mask); err != nil {
			return nil, err
		}
		payload := make([]byte, length)
		if _, err := io.ReadFull(c.reader, payload); err != nil {
			return nil, err
		}
		for i := range payload {
			payload[i] ^= mask[i%4]
		}
		switch opcode {
		case 0x1:
			return payload, nil
		case 0x8:
			c.Close(1000, "")
			return nil, io.EOF
		case 0x9:
			c.writeFrame(0xA, payload)
		}
	}
}
