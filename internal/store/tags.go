package store

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/warrenmesh/warren/internal/tagname"
)

// MaxTags bounds the tags of one key or node.
const MaxTags = 32

// normTags checks tags ("tag:NAME") and returns them sorted, without
// duplicates; nil for none.
func normTags(tags []string) ([]string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	if len(tags) > MaxTags {
		return nil, fmt.Errorf("%w: at most %d tags", ErrInvalid, MaxTags)
	}
	out := make([]string, 0, len(tags))
	for _, t := range tags {
		if err := tagname.Check(t); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		out = append(out, t)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func joinTags(tags []string) string { return strings.Join(tags, ",") }

func splitTags(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// SetNodeTags gives a node a new set of tags (checked, sorted, without
// duplicates): from then on it is owned by them (package policy). An empty
// set is refused: a tagged node goes back to a user only by registering
// again with that user's untagged key.
func (s *Store) SetNodeTags(ctx context.Context, id int64, tags []string) error {
	ts, err := normTags(tags)
	if err != nil {
		return fmt.Errorf("set node tags: %w", err)
	}
	if len(ts) == 0 {
		return fmt.Errorf("set node tags: %w: no tags", ErrInvalid)
	}
	return s.exec(ctx, "set node tags", "UPDATE nodes SET tags = ? WHERE id = ?", joinTags(ts), id)
}
