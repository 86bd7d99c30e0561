package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"cdr.dev/slog/v3"
	"cdr.dev/slog/v3/sloggers/sloghuman"
	"github.com/coder/coder/v2/coderd/agentapi/metadatabatcher"
	"github.com/coder/coder/v2/coderd/database/pubsub"
	"github.com/coder/coder/v2/coderd/wspubsub"
	"github.com/coder/coder/v2/codersdk/agentsdk"
)

// coderdbListen subscribes with coderd's own pubsub (PostgreSQL LISTEN through pubsub.New) and prints each
// message, decoded as coderd's subscribers of that channel decode it.
func coderdbListen(args []string) int {
	fs := flag.NewFlagSet("coderdb listen", flag.ContinueOnError)
	pgURL := fs.String("postgres-url", "", "PostgreSQL URL of the database the publisher notifies on")
	channel := fs.String("channel", "", "the channel, as `coderdb channels` names it")
	count := fs.Int("count", 1, "exit 0 after this many messages")
	timeout := fs.Duration("timeout", 30*time.Second, "exit 1 when the messages have not all arrived by then")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *pgURL == "" || *channel == "" || *count < 1 {
		fmt.Fprintln(os.Stderr, "coderdb listen: --postgres-url, --channel and --count >= 1 are required")
		return exitUsage
	}
	sqlDB, err := openCoderDB(*pgURL)
	if err != nil {
		return coderdbFail("listen", err)
	}
	defer sqlDB.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	logger := slog.Make(sloghuman.Sink(os.Stderr)).Leveled(slog.LevelWarn)
	ps, err := pubsub.New(ctx, logger, sqlDB, pqURL(*pgURL))
	if err != nil {
		return coderdbFail("listen", err)
	}
	defer ps.Close()

	decode := decoderFor(*channel)
	var mu sync.Mutex
	received, undecodable := 0, 0
	done := make(chan struct{})
	// PGPubsub delivers one channel's messages in order, from one goroutine per subscription.
	cancelSub, err := ps.SubscribeWithErr(*channel, func(_ context.Context, message []byte, err error) {
		mu.Lock()
		defer mu.Unlock()
		if received >= *count {
			return
		}
		if err != nil {
			// pubsub.ErrDroppedMessages: the subscriber's queue overflowed.
			emit(map[string]any{"channel": *channel, "error": err.Error()})
			undecodable++
			return
		}
		line := map[string]any{"channel": *channel, "payload_base64": base64.StdEncoding.EncodeToString(message)}
		if utf8.Valid(message) {
			line["payload"] = string(message)
		}
		line["decoder"] = decode.name
		if decode.fn != nil {
			decoded, derr := decode.fn(message)
			if derr != nil {
				line["decode_error"] = derr.Error()
				undecodable++
			} else {
				line["decoded"] = decoded
			}
		}
		emit(line)
		received++
		if received == *count {
			close(done)
		}
	})
	if err != nil {
		return coderdbFail("listen", err)
	}
	defer cancelSub()
	// SubscribeWithErr returns once PostgreSQL acknowledged the LISTEN, so a NOTIFY after this line is delivered.
	emit(map[string]any{"ready": true, "channel": *channel, "decoder": decode.name})

	select {
	case <-done:
	case <-ctx.Done():
		mu.Lock()
		got := received
		mu.Unlock()
		return coderdbFail("listen", fmt.Errorf("timeout after %s: %d of %d messages on %q", *timeout, got, *count,
			*channel))
	}
	mu.Lock()
	defer mu.Unlock()
	if undecodable > 0 {
		fmt.Fprintf(os.Stderr, "coderdb listen: %d message(s) coderd could not decode\n", undecodable)
		return exitFail
	}
	return exitOK
}

type channelDecoder struct {
	name string
	fn   func([]byte) (any, error)
}

// decoderFor recognises a channel by rebuilding its name with each of coderd's channel helpers.
func decoderFor(channel string) channelDecoder {
	if channel == metadatabatcher.MetadataBatchPubsubChannel {
		return channelDecoder{"metadatabatcher", decodeMetadataBatch}
	}
	if len(channel) >= 36 {
		if id, err := uuid.Parse(channel[len(channel)-36:]); err == nil {
			switch channel {
			case wspubsub.WorkspaceEventChannel(id):
				return channelDecoder{"wspubsub.HandleWorkspaceEvent", decodeWorkspaceEvent}
			case agentsdk.LogsNotifyChannel(id):
				return channelDecoder{"agentsdk.LogsNotifyMessage", decodeLogsNotify}
			case agentsdk.PrebuildClaimedChannel(id):
				return channelDecoder{"agentsdk.ReinitializationReason", func(b []byte) (any, error) {
					return decodeReinit(id, b)
				}}
			}
		}
	}
	return channelDecoder{name: "none"}
}

// decodeWorkspaceEvent runs coderd's own handler (wspubsub.HandleWorkspaceEvent: unmarshal, then Validate), which
// coderd's workspace watchers and workspace updates subscribe with.
func decodeWorkspaceEvent(message []byte) (any, error) {
	var event wspubsub.WorkspaceEvent
	var herr error
	wspubsub.HandleWorkspaceEvent(func(_ context.Context, e wspubsub.WorkspaceEvent, err error) {
		event, herr = e, err
	})(context.Background(), message, nil)
	if herr != nil {
		return nil, herr
	}
	return event, nil
}

// decodeLogsNotify unmarshals the logs notification into coderd's type. coderd's own log watcher only takes the
// message as a signal, so this is as strict as the type and no stricter.
func decodeLogsNotify(message []byte) (any, error) {
	var m agentsdk.LogsNotifyMessage
	if err := json.Unmarshal(message, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeMetadataBatch reads a batch as coderd's metadata watcher does (workspaceagents.go,
// watchWorkspaceAgentMetadata): a whole number of metadatabatcher.UUIDBase64Size slots, each one agent ID as
// metadatabatcher.EncodeAgentID writes it, so each must re-encode to the same bytes.
func decodeMetadataBatch(message []byte) (any, error) {
	if len(message)%metadatabatcher.UUIDBase64Size != 0 {
		return nil, fmt.Errorf("length %d is not a multiple of metadatabatcher.UUIDBase64Size (%d)", len(message),
			metadatabatcher.UUIDBase64Size)
	}
	ids := []uuid.UUID{}
	for i := 0; i < len(message); i += metadatabatcher.UUIDBase64Size {
		slot := message[i : i+metadatabatcher.UUIDBase64Size]
		raw, err := base64.RawStdEncoding.DecodeString(string(slot))
		if err != nil {
			return nil, fmt.Errorf("slot %d (%q): %w", i/metadatabatcher.UUIDBase64Size, slot, err)
		}
		id, err := uuid.FromBytes(raw)
		if err != nil {
			return nil, fmt.Errorf("slot %d (%q): %w", i/metadatabatcher.UUIDBase64Size, slot, err)
		}
		again := make([]byte, metadatabatcher.UUIDBase64Size)
		if err := metadatabatcher.EncodeAgentID(id, again); err != nil {
			return nil, err
		}
		if !bytes.Equal(again, slot) {
			return nil, fmt.Errorf("slot %d (%q) is not metadatabatcher.EncodeAgentID(%s) = %q", i/metadatabatcher.UUIDBase64Size,
				slot, id, again)
		}
		ids = append(ids, id)
	}
	return map[string]any{"agent_ids": ids}, nil
}

// decodeReinit is coderd's prebuild claim listener (prebuilds/claim.go): the payload is the reason itself.
func decodeReinit(workspaceID uuid.UUID, message []byte) (any, error) {
	reason := agentsdk.ReinitializationReason(message)
	if reason != agentsdk.ReinitializeReasonPrebuildClaimed {
		return nil, errors.New("reason " + string(message) + " is not one agentsdk defines")
	}
	return agentsdk.ReinitializationEvent{WorkspaceID: workspaceID, Reason: reason}, nil
}

// coderdbChannels names the channels coderd publishes on for an owner's workspaces and an agent, with coderd's
// own helpers, so that no test spells one out.
func coderdbChannels(args []string) int {
	fs := flag.NewFlagSet("coderdb channels", flag.ContinueOnError)
	ownerArg := fs.String("owner-id", "", "the workspace owner's id")
	agentArg := fs.String("agent-id", "", "the agent's id")
	workspaceArg := fs.String("workspace-id", "", "optional: the workspace's id, for the prebuild claim channel")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	owner, err1 := uuid.Parse(*ownerArg)
	agent, err2 := uuid.Parse(*agentArg)
	if err := errors.Join(err1, err2); err != nil {
		fmt.Fprintf(os.Stderr, "coderdb channels: valid --owner-id and --agent-id are required (%v)\n", err)
		return exitUsage
	}
	out := map[string]any{
		"workspace_owner":      wspubsub.WorkspaceEventChannel(owner),
		"agent_logs":           agentsdk.LogsNotifyChannel(agent),
		"agent_metadata_batch": metadatabatcher.MetadataBatchPubsubChannel,
	}
	if *workspaceArg != "" {
		workspace, err := uuid.Parse(*workspaceArg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "coderdb channels: --workspace-id: %v\n", err)
			return exitUsage
		}
		out["prebuild_claimed"] = agentsdk.PrebuildClaimedChannel(workspace)
	}
	// The metadata batch names agents by this encoding, not by their UUID text.
	encoded := make([]byte, metadatabatcher.UUIDBase64Size)
	if err := metadatabatcher.EncodeAgentID(agent, encoded); err != nil {
		return coderdbFail("channels", err)
	}
	out["agent_metadata_batch_id"] = string(encoded)
	return coderdbPrint("channels", out)
}
