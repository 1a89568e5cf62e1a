"""The Slack app: listeners, context gathering, progress replies and storage, on top of rlm."""
