"""Reading and changing asynq's Redis, exactly as asynq does."""
