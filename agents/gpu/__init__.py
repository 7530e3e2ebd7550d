"""The GPU agent: sources behind one seam, pure energy and attribution logic, batching."""
