// Package dynamokv is the kv.Store on Amazon DynamoDB, for the AWS profile.
//
// All keys live in one table (default "heartline") with partition key "ns" (the key's
// first token) and sort key "k" (the whole key), so List(prefix) is a Query of one
// partition with begins_with on the sort key (filtered to whole tokens), and
// List("") a Scan. Reads are strongly consistent.
//
// Every item carries a numeric revision "rev", incremented by each write in the same
// conditional UpdateItem that writes the value, so Create, Update and Delete(rev) are
// compare-and-set operations (ConditionExpression) and report kv.ErrExists and
// kv.ErrConflict exactly like the other backends. A deleted key leaves a tombstone
// ("gone", with "expires" for DynamoDB's time-to-live, default after 7 days) that keeps
// its revision, so a key created again continues above the old revisions and a stale
// writer holding an old revision cannot succeed by chance (no ABA).
//
// DynamoDB has no change feed that fits, so the store does not implement kv.Watcher:
// kv.Watch polls List.
package dynamokv

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	smithy "github.com/aws/smithy-go"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/kv"
)

var (
	_ kv.Store = (*Store)(nil)
	_ Client   = (*dynamodb.Client)(nil)
)

// Client is the part of the DynamoDB API the store uses; *dynamodb.Client has it.
type Client interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, optFns ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, optFns ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
	DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	UpdateTimeToLive(ctx context.Context, in *dynamodb.UpdateTimeToLiveInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateTimeToLiveOutput, error)
}

// ErrTable: the table is missing (and Create is off) or has another key schema.
var ErrTable = errors.New("dynamokv: unusable table")

// DefaultTable is the table used when Options.Table is empty.
const DefaultTable = "heartline"

// Attribute names.
const (
	attrNS      = "ns"
	attrKey     = "k"
	attrValue   = "v"
	attrRev     = "rev"
	attrGone    = "gone"
	attrExpires = "expires"
)

// Options configure Open.
type Options struct {
	Client Client
	// Table name (default "heartline").
	Table string
	// Create the table when it is missing (PAY_PER_REQUEST, time-to-live on "expires"),
	// and wait until it is ACTIVE.
	Create bool
	// TombstoneTTL is how long a deleted key's tombstone is kept (default 7 days).
	TombstoneTTL time.Duration
	Log          zerolog.Logger
}

// Store is a kv.Store on one DynamoDB table. It is safe for concurrent use.
type Store struct {
	c     Client
	table string
	ttl   time.Duration
	log   zerolog.Logger
	now   func() time.Time
}

// Open checks the table (creating it when asked) and returns the store.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Client == nil {
		return nil, errors.New("dynamokv: Options.Client is required")
	}
	if o.Table == "" {
		o.Table = DefaultTable
	}
	if o.TombstoneTTL <= 0 {
		o.TombstoneTTL = 7 * 24 * time.Hour
	}
	s := &Store{c: o.Client, table: o.Table, ttl: o.TombstoneTTL, log: o.Log, now: time.Now}
	if err := s.ensureTable(ctx, o.Create); err != nil {
		return nil, err
	}
	return s, nil
}

// Table is the table's name.
func (s *Store) Table() string { return s.table }

func (s *Store) ensureTable(ctx context.Context, create bool) error {
	pol := backoff.Policy{Initial: 50 * time.Millisecond, Max: time.Second}
	created := false
	for attempt := 1; ; attempt++ {
		out, err := s.c.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.table)})
		var nf *types.ResourceNotFoundException
		switch {
		case err == nil && out.Table != nil:
			if err := checkSchema(out.Table); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrTable, s.table, err)
			}
			if out.Table.TableStatus == types.TableStatusActive || out.Table.TableStatus == types.TableStatusUpdating {
				return nil
			}
		case errors.As(err, &nf) && !create:
			return fmt.Errorf("%w: table %s does not exist (create it, or open with Create)", ErrTable, s.table)
		case errors.As(err, &nf) && !created:
			if err := s.createTable(ctx); err != nil {
				return err
			}
			created = true
		case errors.As(err, &nf):
			// created, not visible yet
		case err != nil:
			return fmt.Errorf("dynamokv: describing table %s: %w", s.table, err)
		}
		if err := backoff.Sleep(ctx, pol.Delay(attempt)); err != nil {
			return fmt.Errorf("dynamokv: waiting for table %s to become active: %w", s.table, err)
		}
	}
}

func checkSchema(t *types.TableDescription) error {
	var hash, rng string
	for _, k := range t.KeySchema {
		switch k.KeyType {
		case types.KeyTypeHash:
			hash = aws.ToString(k.AttributeName)
		case types.KeyTypeRange:
			rng = aws.ToString(k.AttributeName)
		}
	}
	if hash != attrNS || rng != attrKey {
		return fmt.Errorf("key schema is (%q, %q), want partition key %q and sort key %q", hash, rng, attrNS, attrKey)
	}
	return nil
}

func (s *Store) createTable(ctx context.Context) error {
	_, err := s.c.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:   aws.String(s.table),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String(attrNS), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String(attrKey), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(attrNS), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(attrKey), KeyType: types.KeyTypeRange},
		},
	})
	var inUse *types.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return fmt.Errorf("dynamokv: creating table %s: %w", s.table, err)
	}
	if err == nil {
		s.log.Info().Str("table", s.table).Msg("created DynamoDB table")
		// Tombstones expire through DynamoDB's time-to-live. Not every stand-in has it.
		_, terr := s.c.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{TableName: aws.String(s.table),
			TimeToLiveSpecification: &types.TimeToLiveSpecification{AttributeName: aws.String(attrExpires), Enabled: aws.Bool(true)}})
		if terr != nil {
			s.log.Warn().Err(terr).Str("table", s.table).Msg("time-to-live not enabled; tombstones of deleted keys are kept")
		}
	}
	return nil
}

func namespace(key string) string {
	ns, _, _ := strings.Cut(key, ".")
	return ns
}

func itemKey(key string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		attrNS:  &types.AttributeValueMemberS{Value: namespace(key)},
		attrKey: &types.AttributeValueMemberS{Value: key},
	}
}

var names = map[string]string{"#v": attrValue, "#rev": attrRev, "#gone": attrGone, "#exp": attrExpires, "#k": attrKey}

// namesFor returns the expression attribute names an expression uses (DynamoDB
// refuses unused ones).
func namesFor(exprs ...string) map[string]string {
	out := map[string]string{}
	for n, a := range names {
		for _, e := range exprs {
			if strings.Contains(e, n) {
				out[n] = a
			}
		}
	}
	return out
}

func num(n uint64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatUint(n, 10)}
}

func isConditionFailed(err error) bool {
	var cf *types.ConditionalCheckFailedException
	if errors.As(err, &cf) {
		return true
	}
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "ConditionalCheckFailedException"
}

// write runs one conditional UpdateItem that sets the value and bumps the revision.
func (s *Store) write(ctx context.Context, op, key string, value []byte, cond string, vals map[string]types.AttributeValue) (uint64, error) {
	if err := kv.ValidKey(key); err != nil {
		return 0, err
	}
	set := "SET #rev = if_not_exists(#rev, :zero) + :one"
	if vals == nil {
		vals = map[string]types.AttributeValue{}
	}
	vals[":zero"], vals[":one"] = num(0), num(1)
	remove := " REMOVE #gone, #exp"
	if len(value) > 0 {
		set += ", #v = :v"
		vals[":v"] = &types.AttributeValueMemberB{Value: value}
	} else {
		remove += ", #v" // an empty value is stored as no value
	}
	update := set + remove
	in := &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: itemKey(key), UpdateExpression: aws.String(update),
		ExpressionAttributeNames: namesFor(update, cond), ExpressionAttributeValues: vals,
		ReturnValues: types.ReturnValueUpdatedNew,
	}
	if cond != "" {
		in.ConditionExpression = aws.String(cond)
	}
	out, err := s.c.UpdateItem(ctx, in)
	if err != nil {
		if isConditionFailed(err) {
			if op == "create" {
				return 0, fmt.Errorf("%w: %s", kv.ErrExists, key)
			}
			return 0, fmt.Errorf("%w: %s", kv.ErrConflict, key)
		}
		return 0, fmt.Errorf("dynamokv: %s %s: %w", op, key, err)
	}
	rev, err := revOf(out.Attributes)
	if err != nil {
		return 0, fmt.Errorf("dynamokv: %s %s: %w", op, key, err)
	}
	return rev, nil
}

func revOf(item map[string]types.AttributeValue) (uint64, error) {
	n, ok := item[attrRev].(*types.AttributeValueMemberN)
	if !ok {
		return 0, errors.New("item has no numeric revision")
	}
	rev, err := strconv.ParseUint(n.Value, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("revision %q: %w", n.Value, err)
	}
	return rev, nil
}

// Create writes key only if it does not exist (or was deleted).
func (s *Store) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	return s.write(ctx, "create", key, value, "attribute_not_exists(#k) OR attribute_exists(#gone)", nil)
}

// Update writes key only if its revision is still rev.
func (s *Store) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	return s.write(ctx, "update", key, value, "#rev = :rev AND attribute_not_exists(#gone)",
		map[string]types.AttributeValue{":rev": num(rev)})
}

// Put writes key unconditionally.
func (s *Store) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	return s.write(ctx, "put", key, value, "", nil)
}

// Delete removes key if its revision is rev (0: whatever it is), leaving a tombstone
// that keeps the revision.
func (s *Store) Delete(ctx context.Context, key string, rev uint64) error {
	if err := kv.ValidKey(key); err != nil {
		return err
	}
	update := "SET #rev = #rev + :one, #gone = :true, #exp = :exp REMOVE #v"
	cond := "attribute_exists(#k) AND attribute_not_exists(#gone)"
	vals := map[string]types.AttributeValue{
		":one": num(1), ":true": &types.AttributeValueMemberBOOL{Value: true},
		":exp": num(uint64(s.now().Add(s.ttl).Unix())),
	}
	if rev != 0 {
		cond += " AND #rev = :rev"
		vals[":rev"] = num(rev)
	}
	_, err := s.c.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: itemKey(key), UpdateExpression: aws.String(update),
		ConditionExpression: aws.String(cond), ExpressionAttributeNames: namesFor(update, cond), ExpressionAttributeValues: vals,
	})
	switch {
	case err == nil:
		return nil
	case isConditionFailed(err) && rev == 0:
		return nil // missing or already deleted
	case isConditionFailed(err):
		return fmt.Errorf("%w: %s", kv.ErrConflict, key)
	default:
		return fmt.Errorf("dynamokv: delete %s: %w", key, err)
	}
}

// Get returns the current entry or kv.ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (kv.Entry, error) {
	if err := kv.ValidKey(key); err != nil {
		return kv.Entry{}, err
	}
	out, err := s.c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: itemKey(key), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return kv.Entry{}, fmt.Errorf("dynamokv: get %s: %w", key, err)
	}
	if out.Item == nil {
		return kv.Entry{}, fmt.Errorf("%w: %s", kv.ErrNotFound, key)
	}
	e, live, err := entryOf(out.Item)
	if err != nil {
		return kv.Entry{}, fmt.Errorf("dynamokv: get %s: %w", key, err)
	}
	if !live {
		return kv.Entry{}, fmt.Errorf("%w: %s", kv.ErrNotFound, key)
	}
	return e, nil
}

// entryOf converts an item; live is false for a tombstone.
func entryOf(item map[string]types.AttributeValue) (kv.Entry, bool, error) {
	k, ok := item[attrKey].(*types.AttributeValueMemberS)
	if !ok {
		return kv.Entry{}, false, errors.New("item without a key")
	}
	if _, gone := item[attrGone]; gone {
		return kv.Entry{Key: k.Value}, false, nil
	}
	rev, err := revOf(item)
	if err != nil {
		return kv.Entry{}, false, fmt.Errorf("%s: %w", k.Value, err)
	}
	e := kv.Entry{Key: k.Value, Revision: rev, Value: []byte{}}
	if v, ok := item[attrValue].(*types.AttributeValueMemberB); ok {
		e.Value = v.Value
	}
	return e, true, nil
}

// List returns the entries under prefix (whole tokens), sorted by key.
func (s *Store) List(ctx context.Context, prefix string) ([]kv.Entry, error) {
	if prefix != "" {
		if err := kv.ValidKey(prefix); err != nil {
			return nil, err
		}
	}
	var out []kv.Entry
	add := func(items []map[string]types.AttributeValue) error {
		for _, it := range items {
			e, live, err := entryOf(it)
			if err != nil {
				return err
			}
			if live && kv.HasPrefix(e.Key, prefix) {
				out = append(out, e)
			}
		}
		return nil
	}
	var start map[string]types.AttributeValue
	for {
		var items []map[string]types.AttributeValue
		var last map[string]types.AttributeValue
		if prefix == "" {
			res, err := s.c.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(s.table), ConsistentRead: aws.Bool(true), ExclusiveStartKey: start})
			if err != nil {
				return nil, fmt.Errorf("dynamokv: list all: %w", err)
			}
			items, last = res.Items, res.LastEvaluatedKey
		} else {
			in := &dynamodb.QueryInput{TableName: aws.String(s.table), ConsistentRead: aws.Bool(true), ExclusiveStartKey: start,
				KeyConditionExpression:    aws.String("#ns = :ns"),
				ExpressionAttributeNames:  map[string]string{"#ns": attrNS},
				ExpressionAttributeValues: map[string]types.AttributeValue{":ns": &types.AttributeValueMemberS{Value: namespace(prefix)}}}
			if strings.Contains(prefix, ".") {
				in.KeyConditionExpression = aws.String("#ns = :ns AND begins_with(#k, :p)")
				in.ExpressionAttributeNames["#k"] = attrKey
				in.ExpressionAttributeValues[":p"] = &types.AttributeValueMemberS{Value: prefix}
			}
			res, err := s.c.Query(ctx, in)
			if err != nil {
				return nil, fmt.Errorf("dynamokv: list %s: %w", prefix, err)
			}
			items, last = res.Items, res.LastEvaluatedKey
		}
		if err := add(items); err != nil {
			return nil, fmt.Errorf("dynamokv: list %s: %w", prefix, err)
		}
		if len(last) == 0 {
			break
		}
		start = last
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}
