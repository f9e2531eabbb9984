"""OPC UA client adapter (subscriptions and polling reads): see README.md in this folder."""
