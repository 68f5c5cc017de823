"""Workers as AWS Batch jobs: the launcher, the Batch side it reads, the monitor.

``_jobs`` names and reads jobs (tags, handles, how a job ended, the boto3
client); ``_launcher`` submits and ends them and keeps the secret in Secrets
Manager; ``_monitor`` lists and ends the jobs of controllers that are gone.
"""
