package localaws

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
)

// Region and the static credentials the local servers accept (they check neither).
const (
	Region    = "us-east-1"
	AccessKey = "heartline-local"
	SecretKey = "heartline-local-secret"
)

// KinesisClient returns a Kinesis client for endpoint (a Server's Endpoint()). It is
// built directly, not through config.LoadDefaultConfig, so that an AWS_CA_BUNDLE in the
// environment cannot break it. optFns adjust the options (an HTTPClient for fault
// injection, RetryMaxAttempts).
func KinesisClient(endpoint string, optFns ...func(*kinesis.Options)) *kinesis.Client {
	o := kinesis.Options{
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		BaseEndpoint: aws.String(endpoint),
	}
	for _, f := range optFns {
		f(&o)
	}
	return kinesis.New(o)
}

// DynamoClient returns a DynamoDB client for endpoint, like KinesisClient.
func DynamoClient(endpoint string, optFns ...func(*dynamodb.Options)) *dynamodb.Client {
	o := dynamodb.Options{
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		BaseEndpoint: aws.String(endpoint),
	}
	for _, f := range optFns {
		f(&o)
	}
	return dynamodb.New(o)
}
