"""The wire protocol of the Gateway link as pure code: messages, wire names and framing."""
