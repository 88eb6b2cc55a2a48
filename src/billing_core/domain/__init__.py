"""Pure business rules. Nothing here may import boto3, botocore, pynamodb, stripe or Powertools."""
