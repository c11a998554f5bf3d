package kinesisstream

import "errors"

var (
	// ErrBadRecord: a record's data is not a Heartline envelope (written by something
	// else, or corrupt). The consumer delivers such a record raw instead of dropping it.
	ErrBadRecord = errors.New("kinesisstream: malformed record")
	// ErrStreamNotFound: the topic's Kinesis stream does not exist and Create is off.
	ErrStreamNotFound = errors.New("kinesisstream: stream not found")
	// ErrRejected: Kinesis refused a record for a reason retrying cannot fix (a KMS key
	// disabled or not accessible).
	ErrRejected = errors.New("kinesisstream: record rejected")
)
