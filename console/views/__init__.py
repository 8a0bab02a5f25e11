"""The console's pages, run by path from console/main.py (st.navigation); not imported."""
