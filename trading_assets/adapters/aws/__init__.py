"""AWS: the production world (S3, DynamoDB, SQS, SNS, Secrets Manager) through boto3."""
