"""The operations console: a Streamlit app over the store and the queue (`ai-broker console`)."""
