//! Deleting a pod podtun launched.
