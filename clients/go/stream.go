package magistral

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// EventKind says what an Event carries.
type EventKind string

const (
	EventThinking EventKind = "thinking"  // Text is a piece of the reasoning trace
	EventText     EventKind = "text"      // Text is a piece of the answer
	EventToolCall EventKind = "tool_call" // ToolCall is a call (Mistral sends each whole; OpenAI-style servers may split its arguments across events with the same Index)
	EventEnd      EventKind = "end"       // FinishReason and, when the server sends it, Usage
)

// Event is one piece of a streamed answer.
type Event struct {
	Kind         EventKind
	Choice       int // the choice it belongs to (always 0 unless the request set N)
	Text         string
	ToolCall     *ToolCall
	FinishReason string
	Usage        *Usage
}

// Stream reads the events of a streamed chat completion:
//
//	for stream.Next() { event := stream.Event() ... }
//	if err := stream.Err(); err != nil { ... }
type Stream struct {
	ctx     context.Context
	resp    *response
	reader  *bufio.Reader
	pending []Event
	event   Event
	err     error
	closed  bool
}

func newStream(ctx context.Context, resp *response) *Stream {
	return &Stream{ctx: ctx, resp: resp, reader: bufio.NewReader(resp.Body)}
}

// Next advances to the next event; false at the end of the stream or on an error (see Err).
func (s *Stream) Next() bool {
	for len(s.pending) == 0 {
		if s.closed {
			return false
		}
		s.read()
	}
	s.event, s.pending = s.pending[0], s.pending[1:]
	return true
}

// Event is the event Next advanced to.
func (s *Stream) Event() Event { return s.event }

// Err is what ended the stream early: ctx's error once it is cancelled, a *ConnectionError
// (ErrStreamEnded when the connection closed before `data: [DONE]`), or a malformed event.
func (s *Stream) Err() error { return s.err }

// Close ends the stream and closes its connection, so the server stops generating. Call it from
// the goroutine that reads the stream; from another one, cancel the stream's context instead.
func (s *Stream) Close() error {
	if !s.closed {
		s.closed = true
		s.resp.close()
	}
	return nil
}

// read reads one SSE event (its `data:` lines up to a blank line) and queues what it carries.
func (s *Stream) read() {
	var data []string
	for {
		line, err := s.reader.ReadString('\n')
		s.resp.watchdog.reset()
		line = strings.TrimRight(line, "\r\n")
		if err != nil && (err != io.EOF || line == "") {
			if len(data) > 0 { // a last event without its blank line
				s.dispatch(strings.Join(data, "\n"))
			}
			if !s.closed {
				s.fail(err)
			}
			return
		}
		if line == "" {
			if len(data) > 0 {
				s.dispatch(strings.Join(data, "\n"))
				return
			}
			continue
		}
		if value, ok := field(line, "data"); ok {
			data = append(data, value) // other fields (event:, id:) and comments (:...) are skipped
		}
	}
}

// field is the value of an SSE line `name: value` (one space after the colon is optional).
func field(line, name string) (string, bool) {
	if !strings.HasPrefix(line, name+":") {
		return "", false
	}
	return strings.TrimPrefix(line[len(name)+1:], " "), true
}

func (s *Stream) fail(err error) {
	switch {
	case s.ctx.Err() != nil:
		err = s.ctx.Err()
	case errors.Is(err, io.EOF):
		err = &ConnectionError{Err: ErrStreamEnded}
	default:
		err = s.resp.watchdog.connectionError(err)
	}
	s.err = err
	s.Close()
}

// streamChunk is a chat.completion.chunk.
type streamChunk struct {
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Content          json.RawMessage `json:"content"`
			ReasoningContent string          `json:"reasoning_content"`
			ToolCalls        []ToolCall      `json:"tool_calls"`
		} `json:"delta"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *Usage `json:"usage"`
}

// dispatch queues the events of one `data:` payload; [DONE] ends the stream.
func (s *Stream) dispatch(data string) {
	if data == "[DONE]" {
		s.Close()
		return
	}
	var chunk streamChunk
	if err := json.Unmarshal([]byte(data), &chunk); err != nil {
		s.err = fmt.Errorf("magistral: malformed stream event %q: %w", data, err)
		s.Close()
		return
	}
	for _, choice := range chunk.Choices {
		delta, add := choice.Delta, func(e Event) {
			e.Choice = choice.Index
			s.pending = append(s.pending, e)
		}
		// content is a string, or (while the model thinks) a list of chunks
		var text string
		var chunks []Chunk
		if json.Unmarshal(delta.Content, &text) != nil && json.Unmarshal(delta.Content, &chunks) == nil {
			for _, part := range chunks {
				text, thinking := splitChunks([]Chunk{part})
				if thinking != "" {
					add(Event{Kind: EventThinking, Text: thinking})
				}
				if text != "" {
					add(Event{Kind: EventText, Text: text})
				}
			}
		} else {
			if delta.ReasoningContent != "" {
				add(Event{Kind: EventThinking, Text: delta.ReasoningContent})
			}
			if text != "" {
				add(Event{Kind: EventText, Text: text})
			}
		}
		for i := range delta.ToolCalls {
			add(Event{Kind: EventToolCall, ToolCall: &delta.ToolCalls[i]})
		}
		if choice.FinishReason != "" {
			add(Event{Kind: EventEnd, FinishReason: choice.FinishReason, Usage: chunk.Usage})
		}
	}
}
