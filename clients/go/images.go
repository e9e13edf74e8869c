package magistral

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"mime"
	"os"
	"path/filepath"
	"strings"
)

// signatures are the first bytes of the image formats the server reads.
var signatures = []struct {
	prefix []byte
	mime   string
}{
	{[]byte("\x89PNG"), "image/png"},
	{[]byte("\xff\xd8\xff"), "image/jpeg"},
	{[]byte("GIF8"), "image/gif"},
	{[]byte("RIFF"), "image/webp"},
}

func sniff(data []byte) string {
	for _, s := range signatures {
		if bytes.HasPrefix(data, s.prefix) {
			return s.mime
		}
	}
	return "application/octet-stream" // the server names what it cannot decode
}

// ImageFromBytes is a base64 data URL of an image's bytes, its MIME type read from them.
func ImageFromBytes(data []byte) string {
	return "data:" + sniff(data) + ";base64," + base64.StdEncoding.EncodeToString(data)
}

// ImageFromFile is a base64 data URL of an image file, its MIME type from the file's extension
// or, failing that, its bytes.
func ImageFromFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("magistral: reading the image: %w", err)
	}
	kind, _, _ := strings.Cut(mime.TypeByExtension(strings.ToLower(filepath.Ext(path))), ";")
	if !strings.HasPrefix(kind, "image/") {
		kind = sniff(data)
	}
	return "data:" + kind + ";base64," + base64.StdEncoding.EncodeToString(data), nil
}

// ImageURL is an image_url value for an image given as a URL or a file path: http(s) and data:
// URLs pass through (the server fetches http(s) ones), a path becomes a base64 data URL.
func ImageURL(image string) (string, error) {
	for _, scheme := range []string{"http://", "https://", "data:"} {
		if strings.HasPrefix(image, scheme) {
			return image, nil
		}
	}
	return ImageFromFile(image)
}

// UserMessage is a user message with text and images (URLs, data URLs or file paths, see
// ImageURL; for bytes in memory pass ImageFromBytes(data)), in Mistral's content-chunk form.
func UserMessage(text string, images ...string) (Message, error) {
	if len(images) == 0 {
		return Message{Role: "user", Content: text}, nil
	}
	chunks := []Chunk{TextChunk(text)}
	for _, image := range images {
		url, err := ImageURL(image)
		if err != nil {
			return Message{}, err
		}
		chunks = append(chunks, ImageChunk(url))
	}
	return Message{Role: "user", Chunks: chunks}, nil
}
